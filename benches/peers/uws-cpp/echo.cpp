// Echo server on the C++ uWebSockets (epoll, one thread, no TLS, no compression): every message goes back
// to its sender with the same type and bytes, as `ringws serve` (echo mode) and
// benches/peers/node/uws-echo.mjs (uWebSockets.js) do. The in-run C++ reference of scripts/echo_depth1.sh
// (through scripts/peers/uws_cpp.sh).
// Usage: uws-echo [--port PORT]   (default 0: ephemeral). Prints "uws-cpp listening on 127.0.0.1:PORT" on
// stdout; on SIGTERM or SIGINT it exits, saying on stderr how many echoes were dropped over maxBackpressure
// (none expected).
// Built by build.sh from the uWebSockets sources the crates.io crate libuwebsockets-sys ships.
#include "App.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>

namespace {

volatile std::sig_atomic_t dropped = 0;

void stop(int) {
    char line[96];
    int n = 0;
    if (dropped) {
        n = std::snprintf(line, sizeof line, "uws-cpp echo: %ld echoes dropped over maxBackpressure\n",
                          static_cast<long>(dropped));
    }
    if (n > 0) {
        ssize_t ignored = write(2, line, static_cast<size_t>(n));
        (void) ignored;
    }
    _exit(0);
}

int parse_port(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i++) {
        if (!std::strcmp(argv[i], "--port")) {
            char *end = nullptr;
            long port = std::strtol(argv[i + 1], &end, 10);
            if (*argv[i + 1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
                std::fprintf(stderr, "uws-cpp echo: --port takes 0..65535\n");
                std::exit(2);
            }
            return static_cast<int>(port);
        }
    }
    return 0;
}

struct PerSocket {};

} // namespace

int main(int argc, char **argv) {
    int port = parse_port(argc, argv);
    std::signal(SIGTERM, stop);
    std::signal(SIGINT, stop);
    uWS::App()
        .ws<PerSocket>("/*", {
            .compression = uWS::DISABLED,
            .maxPayloadLength = 16 * 1024 * 1024,
            .idleTimeout = 0,
            .maxBackpressure = 64 * 1024 * 1024,
            .closeOnBackpressureLimit = false,
            .resetIdleTimeoutOnSend = false,
            .sendPingsAutomatically = false,
            .message = [](auto *ws, std::string_view message, uWS::OpCode opCode) {
                if (ws->send(message, opCode) == uWS::WebSocket<false, true, PerSocket>::DROPPED) {
                    dropped = dropped + 1;
                }
            },
        })
        .listen("127.0.0.1", port, [port](auto *token) {
            if (!token) {
                std::fprintf(stderr, "uws-cpp echo: listen on 127.0.0.1:%d failed\n", port);
                std::exit(1);
            }
            std::printf("uws-cpp listening on 127.0.0.1:%d\n",
                        us_socket_local_port(0, reinterpret_cast<us_socket_t *>(token)));
            std::fflush(stdout);
        })
        .run();
    return 0;
}
