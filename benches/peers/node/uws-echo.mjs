// Echo server on uWebSockets (uWebSockets.js: uWebSockets' C++ event loop and WebSocket parser with Node
// bindings), the in-run reference of scripts/bench.sh. One thread. Every message goes back to its sender
// with the same type and bytes; no compression.
// Usage: node uws-echo.mjs [--port PORT]   (default 0: ephemeral). Prints "uws listening on 127.0.0.1:PORT".
// Refuses to run on the package's pure-JavaScript fallback: only the native binary is a uWebSockets figure.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const uWS = require("@trufflesuite/uws-js-unofficial");

if (!String(uWS.App).includes("[native code]")) {
  console.error("uws-echo: the native uWebSockets.js binary did not load (fallback in use); refusing to run");
  process.exit(1);
}

const i = process.argv.indexOf("--port");
const port = i >= 0 ? Number(process.argv[i + 1]) : 0;
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("uws-echo: --port takes 0..65535");
  process.exit(2);
}

let dropped = 0;
uWS
  .App()
  .ws("/*", {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 * 1024 * 1024,
    maxBackpressure: 64 * 1024 * 1024,
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      // send copies the bytes; 2 means dropped over maxBackpressure (counted, reported on exit).
      if (ws.send(message, isBinary) === 2) dropped += 1;
    },
  })
  .listen("127.0.0.1", port, (token) => {
    if (!token) {
      console.error(`uws-echo: listen on 127.0.0.1:${port} failed`);
      process.exit(1);
    }
    console.log(`uws listening on 127.0.0.1:${uWS.us_socket_local_port(token)}`);
  });

const stop = () => {
  if (dropped) console.error(`uws-echo: ${dropped} echoes dropped over maxBackpressure`);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
