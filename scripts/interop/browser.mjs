// Headless Chromium against ringws's demo page (web/demo.html, served at GET /) in its plain mode (a server
// without the ringws.v1 subprotocol: --mode broadcast or echo): two pages join the chat, exchange messages
// through the server, the server is restarted on the same port, both pages reconnect by themselves
// (web/ringws.js: exponential backoff with jitter) and exchange messages again. Saves screenshots to the
// artifacts folder. The pub/sub chat (rooms, history, presence, recovery) is browser_chat.mjs.
//
//   node browser.mjs --mode broadcast|echo --artifacts DIR -- SERVER_COMMAND...
//
// The server is started here (SERVER_COMMAND serve --bind 127.0.0.1 --port P --mode M), by PID, and
// stopped by PID. With --mode echo (no broadcast mode in the server) the cross-page delivery checks are
// reported as skipped, never as passed. Prints one line per check and `N passed, N failed`.
import { spawn } from "node:child_process";
import { mkdirSync, openSync, readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { stopServer, waitForState } from "./demo_page.mjs";

const argv = process.argv.slice(2);
const separator = argv.indexOf("--");
if (separator < 0) {
  console.error("usage: node browser.mjs --mode broadcast|echo --artifacts DIR -- SERVER_COMMAND...");
  process.exit(2);
}
const options = Object.fromEntries(
  argv.slice(0, separator).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const serverCommand = argv.slice(separator + 1);
const mode = options.mode ?? "broadcast";
const artifacts = options.artifacts ?? "artifacts";
const broadcast = mode === "broadcast";
mkdirSync(artifacts, { recursive: true });

let passed = 0;
let failed = 0;
let skipped = 0;
const ok = (name) => { passed += 1; console.log(`ok   browser ${name}`); };
const fail = (name, error) => { failed += 1; console.log(`FAIL browser ${name}: ${error.message ?? error}`); };
const skip = (name, why) => { skipped += 1; console.log(`SKIP browser ${name}: ${why}`); };

async function check(name, body) {
  try {
    await body();
    ok(name);
    return true;
  } catch (error) {
    fail(name, error);
    return false;
  }
}

function startServer(port) {
  return new Promise((resolve, reject) => {
    const [program, ...args] = serverCommand;
    const child = spawn(program, [...args, "serve", "--bind", "127.0.0.1", "--port", String(port), "--mode", mode], {
      stdio: ["ignore", "pipe", openSync(path.join(artifacts, "browser-server.log"), "a")],
    });
    let buffer = "";
    const timer = setTimeout(() => reject(new Error("server did not print its listening line in 20 s")), 20_000);
    child.stdout.on("data", (chunk) => {
      buffer += chunk.toString();
      const match = buffer.match(/ringws listening on ([\d.]+):(\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve({ child, port: Number(match[2]) });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening`));
    });
  });
}

async function join(page, name) {
  await page.fill("#name", name);
  await page.click("#join");
  await page.waitForFunction(() => !document.getElementById("text").disabled, null, { timeout: 10_000 });
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#send");
}

async function sees(page, from, text, timeout = 10_000) {
  await page.waitForFunction(
    ([who, what]) => [...document.querySelectorAll("#log li")].some((li) => li.dataset.from === who && li.textContent.endsWith(what)),
    [from, text],
    { timeout },
  );
}

let server;
try {
  server = await startServer(0);
} catch (error) {
  fail("server starts", error);
  console.log(`browser: ${passed} passed, ${failed} failed, ${skipped} skipped`);
  process.exit(1);
}
// Stopped from outside (the interop script's timeout): stop the server we started, by its PID, first.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
    console.log(`FAIL browser interrupted by ${signal}`);
    process.exit(1);
  });
}
const port = server.port;
const url = `http://127.0.0.1:${port}/`;
console.log(`browser: server pid ${server.child.pid} on port ${port}, mode ${mode}`);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const pageErrors = [];
try {
  const pages = [];
  for (const name of ["alice", "bob"]) {
    const context = await browser.newContext({ viewport: { width: 640, height: 560 } });
    const page = await context.newPage();
    page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
    pages.push(page);
  }
  const [alice, bob] = pages;

  // Chromium's own WebSocket API, before the chat pages connect (in broadcast mode, with the sender
  // included, a lone client gets its own messages back like an echo).
  const apiPage = await (await browser.newContext()).newPage();
  await check("Chromium WebSocket API: permessage-deflate in ws.extensions, multi-byte text, 1 MiB binary, clean close with 4000", async () => {
    const result = await apiPage.evaluate(async (wsUrl) => {
      const ws = new WebSocket(wsUrl);
      ws.binaryType = "arraybuffer";
      const next = () => new Promise((resolve, reject) => {
        ws.onmessage = (event) => resolve(event.data);
        ws.onclose = (event) => reject(new Error(`closed ${event.code}`));
      });
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("error")); });
      // Chromium offers permessage-deflate on every connection; the server agrees by default.
      if (!ws.extensions.includes("permessage-deflate")) return `ws.extensions is ${JSON.stringify(ws.extensions)}`;
      const text = "κόσμε € 😀 ".repeat(5000);
      let reply = next();
      ws.send(text);
      if ((await reply) !== text) return "text echo differs";
      const bytes = new Uint8Array(1 << 20);
      for (let i = 0; i < bytes.length; i += 1) bytes[i] = (i * 7919) & 0xff;
      reply = next();
      ws.send(bytes.buffer);
      const got = new Uint8Array(await reply);
      if (got.length !== bytes.length || got.some((b, i) => b !== bytes[i])) return "binary echo differs";
      const closed = new Promise((resolve) => { ws.onclose = (event) => resolve(event); });
      ws.close(4000, "bye");
      const event = await closed;
      if (!event.wasClean) return `close not clean (code ${event.code})`;
      if (event.code !== 4000 && event.code !== 1000) return `close code ${event.code}`;
      return "ok";
    }, url.replace("http://", "ws://"));
    if (result !== "ok") throw new Error(result);
  });
  await apiPage.context().close();

  await check("GET / serves the demo page", async () => {
    const response = await alice.goto(url);
    if (!response || response.status() !== 200) throw new Error(`status ${response?.status()}`);
    const type = response.headers()["content-type"] ?? "";
    if (!type.startsWith("text/html")) throw new Error(`content-type ${type}`);
    await bob.goto(url);
  });
  await check("both pages connect (state open, plain mode: no ringws.v1)", async () => {
    await waitForState(alice, "open");
    await waitForState(bob, "open");
    const mode = await alice.evaluate(() => document.body.dataset.mode);
    if (mode !== "plain") throw new Error(`the page is in mode ${mode}`);
  });
  await check("both pages join", async () => {
    await join(alice, "alice");
    await join(bob, "bob");
  });
  await check("a page sees its own message come back", async () => {
    await say(alice, "Hello from Alice");
    await sees(alice, "alice", "Hello from Alice");
  });
  if (broadcast) {
    await check("bob sees alice's message", () => sees(bob, "alice", "Hello from Alice"));
    await check("alice sees bob's reply", async () => {
      await say(bob, "Hi Alice, Bob here");
      await sees(alice, "bob", "Hi Alice, Bob here");
    });
  } else {
    skip("bob sees alice's message", "the server has no broadcast mode");
    skip("alice sees bob's reply", "the server has no broadcast mode");
  }

  await check("server stopped: both pages show the connection lost (reconnecting)", async () => {
    await stopServer(server.child);
    await waitForState(alice, "reconnecting");
    await waitForState(bob, "reconnecting");
  });
  await check("server restarted on the same port: both pages reconnect by themselves", async () => {
    server = await startServer(port);
    await waitForState(alice, "open", 20_000);
    await waitForState(bob, "open", 20_000);
    const reconnects = await alice.evaluate(() => window.ringwsDemo.reconnects);
    if (reconnects < 1) throw new Error(`alice reports ${reconnects} reconnects`);
  });
  if (broadcast) {
    await check("messages flow again after the restart", async () => {
      await say(bob, "Back after the restart");
      await sees(alice, "bob", "Back after the restart");
      await say(alice, "Welcome back");
      await sees(bob, "alice", "Welcome back");
    });
  } else {
    await check("echo works again after the restart", async () => {
      await say(alice, "Back after the restart");
      await sees(alice, "alice", "Back after the restart");
    });
    skip("messages flow between pages after the restart", "the server has no broadcast mode");
  }

  await check("no script errors on the pages", async () => {
    if (pageErrors.length) throw new Error(pageErrors.join("; "));
  });

  // One picture of both pages side by side.
  const shots = [];
  for (const [index, page] of pages.entries()) {
    const file = path.join(artifacts, `demo-${index === 0 ? "alice" : "bob"}.png`);
    await page.screenshot({ path: file });
    shots.push(readFileSync(file).toString("base64"));
  }
  const composite = await (await browser.newContext({ viewport: { width: 1340, height: 600 } })).newPage();
  await composite.setContent(
    `<body style="margin:0;display:flex;gap:20px;padding:10px;background:#ccc">` +
      shots.map((b64) => `<img style="border:1px solid #555" src="data:image/png;base64,${b64}">`).join("") +
      `</body>`,
  );
  const screenshot = path.join(artifacts, "interop-chat.png");
  await composite.screenshot({ path: screenshot });
  console.log(`browser: screenshot ${screenshot}`);
} catch (error) {
  fail("unexpected error", error);
} finally {
  await browser.close();
  await stopServer(server.child);
}
console.log(`browser: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
