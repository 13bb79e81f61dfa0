// Broadcast server on the C++ uWebSockets (epoll, one thread, no TLS, no compression): every connection
// subscribes to one topic and every message a connection sends is published to every other open
// connection (`ws->publish`, which skips the sender), as `ringws serve --mode broadcast
// --broadcast-include-sender false` and benches/peers/uws/server.js (uWebSockets.js) do. The in-run C++
// reference of scripts/fanout.sh (SERVER=uwscpp).
// Usage: uws-broadcast [PORT] [samples]   (PORT 0 or absent: ephemeral). Prints
// "uws-cpp listening on 127.0.0.1:PORT" on stdout; with "samples", then every 50 ms a line
// "t cpu_ticks open deliveries" (monotonic seconds, the process's utime + stime from /proc/self/stat,
// open WebSockets, deliveries so far counted as publishes x other subscribers), the format
// scripts/fanout.sh reads.
// Built by build.sh from the uWebSockets sources the crates.io crate libuwebsockets-sys ships.
#include "App.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace {

long open_count = 0;
unsigned long long deliveries = 0;
uWS::App *app = nullptr;

// utime + stime of this process, in clock ticks (fields 14 and 15 of /proc/self/stat, counted after the
// command name, which may hold spaces).
long long cpu_ticks() {
    char buf[1024];
    FILE *f = std::fopen("/proc/self/stat", "r");
    if (!f) {
        return -1;
    }
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    char *p = std::strrchr(buf, ')');
    if (!p) {
        return -1;
    }
    p += 2; // ") " then field 3 (state)
    long long utime = 0, stime = 0;
    for (int field = 3; field <= 15 && *p; field++) {
        char *end = nullptr;
        long long v = std::strtoll(p, &end, 10);
        if (field == 14) {
            utime = v;
        } else if (field == 15) {
            stime = v;
        }
        p = std::strchr(p, ' ');
        if (!p) {
            break;
        }
        p++;
    }
    return utime + stime;
}

void sample(us_timer_t *) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    std::printf("%.6f %lld %ld %llu\n", static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9,
                cpu_ticks(), open_count, deliveries);
    std::fflush(stdout);
}

struct PerSocket {};

} // namespace

int main(int argc, char **argv) {
    int port = argc > 1 ? std::atoi(argv[1]) : 0;
    bool samples = argc > 2 && !std::strcmp(argv[2], "samples");
    uWS::App server;
    app = &server;
    server
        .ws<PerSocket>("/*", {
            .compression = uWS::DISABLED,
            .maxPayloadLength = 16 * 1024 * 1024,
            .idleTimeout = 0,
            .maxBackpressure = 64 * 1024 * 1024,
            .closeOnBackpressureLimit = false,
            .resetIdleTimeoutOnSend = false,
            .sendPingsAutomatically = false,
            .open = [](auto *ws) {
                open_count++;
                ws->subscribe("all");
            },
            .message = [](auto *ws, std::string_view message, uWS::OpCode opCode) {
                ws->publish("all", message, opCode);
                deliveries += app->numSubscribers("all") - 1;
            },
            .close = [](auto *, int, std::string_view) { open_count--; },
        })
        .listen("127.0.0.1", port, [port](auto *token) {
            if (!token) {
                std::fprintf(stderr, "uws-cpp broadcast: listen on 127.0.0.1:%d failed\n", port);
                std::exit(1);
            }
            std::printf("uws-cpp listening on 127.0.0.1:%d\n",
                        us_socket_local_port(0, reinterpret_cast<us_socket_t *>(token)));
            std::fflush(stdout);
        });
    if (samples) {
        us_timer_t *timer = us_create_timer(reinterpret_cast<us_loop_t *>(uWS::Loop::get()), 0, 0);
        us_timer_set(timer, sample, 50, 50);
    }
    server.run();
    return 0;
}
