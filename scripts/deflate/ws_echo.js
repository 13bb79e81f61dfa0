// Echo server on the Node `ws` package with permessage-deflate, a reference of scripts/deflate_bench.sh.
// One thread. perMessageDeflate with ws's defaults (zlib level default, memLevel 8, a deflater and inflater
// per connection as the offer allows) but a 128-byte threshold, ringws's default.
// Usage: node ws_echo.js [PORT]. Prints "ws listening on 127.0.0.1:PORT". Needs
// NODE_PATH=benches/peers/node/node_modules.
const { WebSocketServer } = require("ws");

const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: Number(process.argv[2] || 0),
  perMessageDeflate: { threshold: 128 },
  maxPayload: 16 * 1024 * 1024,
});
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on("error", (e) => console.error(`ws_echo: connection error: ${e.message}`));
});
wss.on("listening", () => console.log(`ws listening on 127.0.0.1:${wss.address().port}`));
wss.on("error", (e) => {
  console.error(`ws_echo: ${e.message}`);
  process.exit(1);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
