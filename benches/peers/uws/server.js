// Reference broadcast server on uWebSockets (uWebSockets.js): every message a connection sends is
// published to every other open connection, as `ringws serve --mode broadcast` does. One thread.
// Usage: node server.js [PORT] [samples]   (PORT 0: ephemeral). Prints "uws listening on 127.0.0.1:PORT"
// on stdout; with "samples", then every 50 ms a line "t cpu_ticks open deliveries" (the process's
// utime + stime from /proc/self/stat, open WebSockets, deliveries so far), the format scripts/fanout.sh
// reads from its sampler for ringws.
// Env: UWS_MODE=echo sends each message back to its sender instead (as `ringws serve` does by default);
// UWS_CERT=cert.pem UWS_KEY=key.pem serve wss:// (uWS.SSLApp, OpenSSL/BoringSSL inside uWebSockets.js)
// instead of ws:// (scripts/tls_bench.sh handshakes).
const fs = require("fs");
const uWS = require("@trufflesuite/uws-js-unofficial");
const port = Number(process.argv[2] || 0);
let open = 0;
let deliveries = 0;
const echo = process.env.UWS_MODE === "echo";
const tls = process.env.UWS_CERT && process.env.UWS_KEY;
const app = tls
  ? uWS.SSLApp({ cert_file_name: process.env.UWS_CERT, key_file_name: process.env.UWS_KEY })
  : uWS.App();
app
  .ws("/*", {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 * 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    open: (ws) => {
      open += 1;
      if (!echo) ws.subscribe("all");
    },
    close: () => {
      open -= 1;
    },
    // ws.publish skips the sender, like ringws' broadcast mode.
    message: (ws, message, isBinary) => {
      if (echo) {
        ws.send(message, isBinary);
        deliveries += 1;
        return;
      }
      ws.publish("all", message, isBinary);
      deliveries += app.numSubscribers("all") - 1;
    },
  })
  .listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error("uws: listen failed");
      process.exit(1);
    }
    console.log(`uws${tls ? " (SSL)" : ""} listening on 127.0.0.1:${uWS.us_socket_local_port(token)}`);
  });
if (process.argv[3] === "samples") {
  setInterval(() => {
    const f = fs.readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
    const ticks = Number(f[11]) + Number(f[12]);
    console.log(`${performance.now() / 1000} ${ticks} ${open} ${deliveries}`);
  }, 50);
}
process.on("SIGTERM", () => process.exit(0));
