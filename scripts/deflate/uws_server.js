// uWebSockets.js with permessage-deflate, the reference of scripts/deflate_bench.sh. One thread.
// Usage: node uws_server.js MODE COMPRESSOR [PORT] [samples]
//   MODE: echo (every message back to its sender, compressed when the connection agreed) or broadcast
//         (every message published to every other connection, like `ringws serve --mode broadcast`);
//   COMPRESSOR: shared (SHARED_COMPRESSOR) or dedicated3kb (DEDICATED_COMPRESSOR_3KB); the decompressor is
//         SHARED_DECOMPRESSOR (the loadgen's messages carry no context).
// Prints "uws listening on 127.0.0.1:PORT"; with "samples", then every 50 ms "t cpu_ticks open deliveries"
// (the format of benches/peers/uws/server.js). Needs NODE_PATH=benches/peers/node/node_modules.
const fs = require("fs");
const uWS = require("@trufflesuite/uws-js-unofficial");

if (!String(uWS.App).includes("[native code]")) {
  console.error("uws_server: the native uWebSockets.js binary did not load; refusing to run");
  process.exit(1);
}
const [mode, kind, portArg, samples] = process.argv.slice(2);
const compressors = { shared: uWS.SHARED_COMPRESSOR, dedicated3kb: uWS.DEDICATED_COMPRESSOR_3KB };
if (!["echo", "broadcast"].includes(mode) || !(kind in compressors)) {
  console.error("usage: uws_server.js echo|broadcast shared|dedicated3kb [PORT] [samples]");
  process.exit(2);
}
let open = 0;
let deliveries = 0;
let dropped = 0;
const app = uWS.App();
app
  .ws("/*", {
    compression: compressors[kind] | uWS.SHARED_DECOMPRESSOR,
    maxPayloadLength: 16 * 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    open: (ws) => {
      open += 1;
      if (mode === "broadcast") ws.subscribe("all");
    },
    close: () => {
      open -= 1;
    },
    message: (ws, message, isBinary) => {
      if (mode === "echo") {
        if (ws.send(message, isBinary, true) === 2) dropped += 1;
      } else {
        // publish skips the sender and compresses for each subscriber that agreed.
        ws.publish("all", message, isBinary, true);
        deliveries += app.numSubscribers("all") - 1;
      }
    },
  })
  .listen("127.0.0.1", Number(portArg || 0), (token) => {
    if (!token) {
      console.error("uws_server: listen failed");
      process.exit(1);
    }
    console.log(`uws listening on 127.0.0.1:${uWS.us_socket_local_port(token)}`);
  });
if (samples === "samples") {
  setInterval(() => {
    const f = fs.readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
    console.log(`${performance.now() / 1000} ${Number(f[11]) + Number(f[12])} ${open} ${deliveries}`);
  }, 50);
}
const stop = () => {
  if (dropped) console.error(`uws_server: ${dropped} echoes dropped over maxBackpressure`);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
