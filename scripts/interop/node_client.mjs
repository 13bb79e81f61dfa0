// Interop checks with the Node `ws` client against a running ringws echo server.
//
//   node node_client.mjs ws://127.0.0.1:PORT/
//
// Echo (text, multi-byte, binary, empty, 1 MiB, many in order), ping/pong (payloads up to 125 bytes),
// and close codes (client-initiated 1000/1001/3000/4999 answered; a protocol error from the client is
// answered with 1002, invalid UTF-8 with 1007, an oversized message with 1009). Prints one line per check
// and `N passed, N failed`; exits 1 on any failure.
import { randomBytes } from "node:crypto";
import WebSocket from "ws";

const url = process.argv[2];
if (!url) {
  console.error("usage: node node_client.mjs ws://HOST:PORT/");
  process.exit(2);
}
const TIMEOUT_MS = 10_000;
let passed = 0;
let failed = 0;

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout waiting for ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function open(options = {}) {
  return withTimeout(
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 << 20, ...options });
      ws.once("open", () => resolve(ws));
      ws.once("error", reject);
    }),
    "open",
  );
}

function nextMessage(ws) {
  return withTimeout(
    new Promise((resolve, reject) => {
      ws.once("message", (data, isBinary) => resolve({ data, isBinary }));
      ws.once("close", (code) => reject(new Error(`closed with ${code} before a message`)));
    }),
    "a message",
  );
}

function closed(ws) {
  return withTimeout(
    new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }))),
    "close",
  );
}

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    passed += 1;
    console.log(`ok   node ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL node ${name}: ${error.message}`);
  }
}

function assertEqualBytes(got, wanted, what) {
  const a = Buffer.from(got);
  const b = Buffer.from(wanted);
  if (!a.equals(b)) throw new Error(`${what}: got ${a.length} bytes, wanted ${b.length}`);
}

async function echo(payload, binary) {
  const ws = await open();
  ws.send(payload, { binary });
  const { data, isBinary } = await nextMessage(ws);
  if (isBinary !== binary) throw new Error(`echo came back as ${isBinary ? "binary" : "text"}`);
  assertEqualBytes(data, typeof payload === "string" ? Buffer.from(payload, "utf8") : payload, "echo");
  ws.close(1000);
  await closed(ws);
}

await check("echo text", () => echo("Hello from node ws", false));
await check("echo multi-byte text", () => echo("κόσμε € 😀".repeat(100), false));
await check("echo empty text", () => echo("", false));
await check("echo binary", () => echo(randomBytes(4096), true));
await check("echo empty binary", () => echo(Buffer.alloc(0), true));
await check("echo 1 MiB binary", () => echo(randomBytes(1 << 20), true));
await check("echo fragmented text (ws fin:false)", async () => {
  const ws = await open();
  ws.send("part one, ", { fin: false });
  ws.send("part two, ", { fin: false });
  ws.send("end", { fin: true });
  const { data, isBinary } = await nextMessage(ws);
  if (isBinary || data.toString() !== "part one, part two, end") throw new Error(`got ${data.toString()}`);
  ws.close(1000);
  await closed(ws);
});
await check("200 messages echoed in order", async () => {
  const ws = await open();
  const received = [];
  const done = new Promise((resolve) => {
    ws.on("message", (data) => {
      received.push(data.toString());
      if (received.length === 200) resolve();
    });
  });
  for (let i = 0; i < 200; i += 1) ws.send(`message ${i}`);
  await withTimeout(done, "200 echoes");
  received.forEach((message, i) => {
    if (message !== `message ${i}`) throw new Error(`message ${i} came back as ${message}`);
  });
  ws.close(1000);
  await closed(ws);
});

for (const size of [0, 1, 64, 125]) {
  await check(`ping with ${size} bytes gets its pong`, async () => {
    const ws = await open();
    const payload = randomBytes(size);
    const pong = withTimeout(new Promise((resolve) => ws.once("pong", resolve)), "pong");
    ws.ping(payload);
    assertEqualBytes(await pong, payload, "pong payload");
    ws.close(1000);
    await closed(ws);
  });
}
await check("unsolicited pong is ignored, the connection stays usable", async () => {
  const ws = await open();
  ws.pong(Buffer.from("unsolicited"));
  ws.send("still here");
  const { data } = await nextMessage(ws);
  if (data.toString() !== "still here") throw new Error(`got ${data.toString()}`);
  ws.close(1000);
  await closed(ws);
});

for (const code of [1000, 1001, 3000, 4999]) {
  await check(`client close with ${code} is answered`, async () => {
    const ws = await open();
    const whenClosed = closed(ws);
    ws.close(code, "bye");
    const { code: received } = await whenClosed;
    if (received !== code && received !== 1000) throw new Error(`close event code ${received}`);
  });
}

async function serverCloses(rawFrame, wantedCode, what) {
  const ws = await open();
  const whenClosed = closed(ws);
  ws._socket.write(rawFrame); // under the library: frames ws would refuse to send
  const { code } = await whenClosed;
  if (code !== wantedCode) throw new Error(`${what}: close code ${code}, wanted ${wantedCode}`);
}

function maskedFrame(firstByte, payload) {
  const key = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i += 1) masked[i] ^= key[i % 4];
  return Buffer.concat([Buffer.from([firstByte, 0x80 | masked.length]), key, masked]);
}

await check("frame with a reserved bit is closed with 1002", () =>
  serverCloses(maskedFrame(0x80 | 0x40 | 0x1, Buffer.from("rsv1")), 1002, "RSV1"),
);
await check("reserved opcode is closed with 1002", () =>
  serverCloses(maskedFrame(0x80 | 0x3, Buffer.from("op3")), 1002, "opcode 3"),
);
await check("invalid UTF-8 text is closed with 1007", () =>
  serverCloses(maskedFrame(0x80 | 0x1, Buffer.from([0xce, 0xba, 0xed, 0xa0, 0x80])), 1007, "surrogate"),
);
await check("invalid close code is closed with 1002", () =>
  serverCloses(maskedFrame(0x80 | 0x8, Buffer.from([0x03, 0xed])), 1002, "close 1005"),
);
await check("message over 16 MiB is closed with 1009", async () => {
  const ws = await open();
  const whenClosed = closed(ws);
  ws.on("error", () => {});
  ws.send(Buffer.alloc((16 << 20) + 1), { binary: true });
  const { code } = await whenClosed;
  if (code !== 1009) throw new Error(`close code ${code}, wanted 1009`);
});

// permessage-deflate: ws compresses every message (threshold 0) and the server answers compressed at or
// above its threshold; the bytes read off the socket show the echo came compressed.
function jsonText(size) {
  let text = "";
  for (let i = 0; text.length < size; i += 1) text += `{"id":${i},"user":"u${i % 7}","text":"hello ${i * 31 % 97}"},`;
  return text.slice(0, size);
}
await check("permessage-deflate negotiated (perMessageDeflate: true)", async () => {
  const ws = await open({ perMessageDeflate: { threshold: 0 } });
  if (!ws.extensions.includes("permessage-deflate")) throw new Error(`extensions: ${ws.extensions}`);
  ws.close(1000);
  await closed(ws);
});
await check("compressed echo of JSON and binary, 0 B to 1 MiB", async () => {
  const ws = await open({ perMessageDeflate: { threshold: 0 } });
  ws.setMaxListeners(100); // nextMessage adds a close listener per message
  for (const size of [0, 1, 16, 127, 128, 1000, 4096, 65535, 65536, 131072, 1 << 20]) {
    for (const [payload, binary] of [
      [jsonText(size), false],
      [Buffer.alloc(size, 7), true],
      [randomBytes(size), true],
    ]) {
      ws.send(payload, { binary });
      const { data, isBinary } = await nextMessage(ws);
      if (isBinary !== binary) throw new Error(`echo of ${size} came back as ${isBinary ? "binary" : "text"}`);
      assertEqualBytes(data, typeof payload === "string" ? Buffer.from(payload) : payload, `echo of ${size}`);
    }
  }
  ws.close(1000);
  await closed(ws);
});
await check("a 64 KiB JSON echo comes back compressed", async () => {
  const ws = await open({ perMessageDeflate: { threshold: 0 } });
  const before = ws._socket.bytesRead;
  ws.send(jsonText(65536));
  const { data } = await nextMessage(ws);
  const read = ws._socket.bytesRead - before;
  if (data.length !== 65536 || read > 65536 / 2) throw new Error(`${read} bytes read for a 64 KiB echo`);
  ws.close(1000);
  await closed(ws);
});
await check("17 MiB compressed to a few KiB is closed with 1009", async () => {
  const ws = await open({ perMessageDeflate: { threshold: 0 } });
  const whenClosed = closed(ws);
  ws.on("error", () => {});
  ws.send(Buffer.alloc(17 << 20), { binary: true });
  const { code } = await whenClosed;
  if (code !== 1009) throw new Error(`close code ${code}, wanted 1009`);
});

console.log(`node: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
