// Echo server on the Node `ws` package, a second in-run reference of scripts/bench.sh. One thread. Every
// message goes back to its sender with the same type and bytes; no compression.
// Usage: node ws-echo.mjs [--port PORT]   (default 0: ephemeral). Prints "ws listening on 127.0.0.1:PORT".
import { WebSocketServer } from "ws";

const i = process.argv.indexOf("--port");
const port = i >= 0 ? Number(process.argv[i + 1]) : 0;
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("ws-echo: --port takes 0..65535");
  process.exit(2);
}

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  maxPayload: 16 * 1024 * 1024,
});
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", (e) => console.error(`ws-echo: connection error: ${e.message}`));
});
wss.on("listening", () => console.log(`ws listening on 127.0.0.1:${wss.address().port}`));
wss.on("error", (e) => {
  console.error(`ws-echo: ${e.message}`);
  process.exit(1);
});

const stop = () => process.exit(0);
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
