// Headless Chromium on the demo chat (web/demo.html on web/ringws.js) whose WebSocket upgrade is blocked:
// the page is served through a small HTTP proxy of this script's own that forwards plain HTTP (the page,
// /ringws.js, /healthz, the event stream) to node A and refuses every `Upgrade: websocket` with 403, as some
// networks do. Two nodes joined through Redis (`--mode pubsub --broker redis://127.0.0.1:P --history-size
// 100`, JWT auth and a publish token):
//   - the page falls back to Server-Sent Events by itself (`GET /sse`, the token in the query) and says so
//     (`data-transport="sse"`, the state pill), read-only;
//   - messages published over HTTP `POST /publish` to node B reach it;
//   - node A is stopped (SIGTERM: its stream ends with `event: close` 1001; the proxy then resets every
//     connection, as an unreachable server would), three messages are published to node B, node A is
//     started again on its port: the browser reconnects the stream by itself with `Last-Event-ID` (the
//     proxy logs the header), node A recovers the gap from Redis, and the page shows exactly the missed
//     messages, once, in order, offsets without a hole, and "recovered";
//   - a message published afterwards arrives once; a screenshot (DIR/sse-recovered.png).
//
//   node browser_sse.mjs --artifacts DIR [--redis-server PATH] -- SERVER_COMMAND...
//
// Redis, both nodes and the proxy are started here (processes by PID, stopped by PID). Prints one line per
// check and `N passed, N failed`.
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";
import { children, startProcess, startRedis, stopProcess } from "./processes.mjs";
import { assert, waitForState, chatLines } from "./demo_page.mjs";

const argv = process.argv.slice(2);
const separator = argv.indexOf("--");
if (separator < 0) {
  console.error("usage: node browser_sse.mjs --artifacts DIR [--redis-server PATH] -- SERVER_COMMAND...");
  process.exit(2);
}
const options = Object.fromEntries(
  argv.slice(0, separator).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const serverCommand = argv.slice(separator + 1);
const artifacts = options.artifacts ?? "artifacts";
const redisProgram = options["redis-server"] ?? "redis-server";
const work = path.join(artifacts, "browser-sse");
mkdirSync(work, { recursive: true });

let passed = 0;
let failed = 0;
const ok = (name) => { passed += 1; console.log(`ok   browser-sse ${name}`); };
const fail = (name, error) => { failed += 1; console.log(`FAIL browser-sse ${name}: ${error.message ?? error}`); };
const note = (text) => console.log(`browser-sse: ${text}`);

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- secrets and tokens --------------------------------------------------------------------------------

const secret = randomBytes(32).toString("hex");
const publishToken = randomBytes(16).toString("hex");
const secretFile = path.join(work, "jwt-secret");
const publishTokenFile = path.join(work, "publish-token");
writeFileSync(secretFile, secret, { mode: 0o600 });
writeFileSync(publishTokenFile, publishToken, { mode: 0o600 });

const b64url = (value) => Buffer.from(value).toString("base64url");
function jwt(user) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({
    sub: user,
    exp: Math.floor(Date.now() / 1000) + 3600,
    channels: { sub: ["room.*"], pub: ["room.*"] },
  }));
  const signature = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

// --- processes, by PID -------------------------------------------------------------------------------------

async function startRedisHere() {
  return startRedis(redisProgram, path.join(artifacts, "browser-sse-redis.log"));
}

async function startNode(name, port, redisPort) {
  const [program, ...args] = serverCommand;
  const { child, match } = await startProcess(`node ${name}`, program, [
    ...args, "serve", "--bind", "127.0.0.1", "--port", String(port), "--mode", "pubsub",
    "--broker", `redis://127.0.0.1:${redisPort}`, "--history-size", "100",
    "--auth-jwt-secret-file", secretFile, "--publish-token-file", publishTokenFile,
  ], /ringws listening on ([\d.]+):(\d+)/, path.join(artifacts, `browser-sse-node-${name}.log`));
  return { child, port: Number(match[2]) };
}

async function publishOverHttp(port, topic, body) {
  const response = await fetch(`http://127.0.0.1:${port}/publish?topic=${topic}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${publishToken}` },
    body,
  });
  assert(response.status === 200, `POST /publish answered ${response.status}: ${await response.text()}`);
}

// --- the proxy that blocks WebSockets ------------------------------------------------------------------

/** Every `/sse` request the proxy forwarded: its `Last-Event-ID` header (or null) and when. */
const streamRequests = [];
let upgradesRefused = 0;

/** Forwards plain HTTP to 127.0.0.1:`target()`; refuses upgrades with 403; resets on an unreachable target. */
function startProxy(target) {
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    if (req.url.startsWith("/sse")) streamRequests.push({ at: Date.now(), lastEventId: req.headers["last-event-id"] ?? null });
    const upstream = http.request({ host: "127.0.0.1", port: target(), method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      res.flushHeaders();
      answer.pipe(res);
    });
    // An unreachable server looks like a network failure to the browser (no answer at all).
    upstream.on("error", () => req.socket.destroy());
    req.pipe(upstream);
  });
  server.on("connection", (socket) => { sockets.add(socket); socket.once("close", () => sockets.delete(socket)); });
  server.on("upgrade", (req, socket) => {
    upgradesRefused += 1;
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 26\r\nConnection: close\r\n\r\nwebsockets are not allowed");
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({ server, port: server.address().port, sockets }));
  });
}

// --- the run ---------------------------------------------------------------------------------------------

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const child of children) child.kill("SIGKILL");
    console.log(`FAIL browser-sse interrupted by ${signal}`);
    process.exit(1);
  });
}

let redis;
let nodeA;
let nodeB;
let proxy;
try {
  redis = await startRedisHere();
  nodeA = await startNode("a", 0, redis.port);
  nodeB = await startNode("b", 0, redis.port);
  proxy = await startProxy(() => nodeA.port);
} catch (error) {
  fail("redis, two nodes and the proxy start", error);
  for (const child of children) await stopProcess(child);
  console.log(`browser-sse: ${passed} passed, ${failed} failed, 0 skipped`);
  process.exit(1);
}
const portA = nodeA.port;
const portB = nodeB.port;
note(`redis pid ${redis.child.pid} on port ${redis.port}; node A pid ${nodeA.child.pid} on port ${portA}; node B pid ${nodeB.child.pid} on port ${portB}; proxy (no WebSockets) on port ${proxy.port}`);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const pageErrors = [];
const before = ["before 1", "before 2"];
const missed = ["missed 1", "missed 2", "missed 3"];
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.goto(`http://127.0.0.1:${proxy.port}/?token=${jwt("erin")}&room=lobby&backoff_base=200&backoff_cap=2000`);

  await check("the WebSocket is refused by the proxy and the page falls back to SSE (read-only)", async () => {
    await page.waitForFunction(() => document.body.dataset.transport === "sse" && document.body.dataset.state === "open"
      && document.body.dataset.room === "lobby", null, { timeout: 20_000 })
      .catch(async (error) => {
        const seen = await page.evaluate(() => JSON.stringify({ ...document.body.dataset, states: window.ringwsDemo?.states }));
        throw new Error(`${error.message}: the page is ${seen}`);
      });
    assert(upgradesRefused >= 2, `${upgradesRefused} upgrades refused`);
    const pill = await page.textContent("#state");
    assert(/SSE/.test(pill), `the state pill says ${pill}`);
    assert(await page.evaluate(() => document.getElementById("text").disabled), "the message box is enabled on SSE");
    assert(streamRequests.length >= 1 && streamRequests[0].lastEventId === null, `stream requests: ${JSON.stringify(streamRequests)}`);
    note(`${upgradesRefused} upgrades refused before the fallback`);
  });

  const lines = async () => (await chatLines(page)).filter((l) => l.from === "http");
  const waitForTexts = async (texts, timeout = 10_000) => {
    const end = Date.now() + timeout;
    let got;
    while (JSON.stringify((got = await lines()).map((l) => l.text)) !== JSON.stringify(texts)) {
      if (Date.now() > end) throw new Error(`the page shows ${JSON.stringify(got.map((l) => l.text))}, expected ${JSON.stringify(texts)}`);
      await sleep(100);
    }
    return got;
  };

  await check("messages published over HTTP to node B arrive over the stream", async () => {
    // Node A's subscription reaches Redis shortly after the stream opened (docs/CLUSTER.md): publish a probe
    // until one arrives, so the messages below are not published before A listens.
    const end = Date.now() + 10_000;
    while (!(await chatLines(page)).some((l) => l.from === "probe")) {
      if (Date.now() > end) throw new Error("no probe published to node B reached the page within 10 s");
      await publishOverHttp(portB, "room.lobby", JSON.stringify({ user: "probe", text: "probe" }));
      await sleep(200);
    }
    for (const text of before) await publishOverHttp(portB, "room.lobby", JSON.stringify({ user: "http", text }));
    await waitForTexts(before);
  });

  const requestsBefore = streamRequests.length;
  await check("node A stopped: the stream ends and the page says it is reconnecting", async () => {
    await stopProcess(nodeA.child);
    for (const socket of proxy.sockets) socket.destroy();
    await page.waitForFunction(() => document.body.dataset.state !== "open", null, { timeout: 10_000 });
  });
  await check("three messages published to node B while A is down; A started again on its port", async () => {
    for (const text of missed) await publishOverHttp(portB, "room.lobby", JSON.stringify({ user: "http", text }));
    await sleep(1_000);
    nodeA = await startNode("a", portA, redis.port);
    note(`node A restarted, pid ${nodeA.child.pid}`);
    await waitForState(page, "open", 20_000);
  });

  await check("the browser resumed the stream with Last-Event-ID naming the last message it had", async () => {
    const resumed = streamRequests.slice(requestsBefore).filter((r) => r.lastEventId !== null);
    assert(resumed.length >= 1, `stream requests since the stop: ${JSON.stringify(streamRequests.slice(requestsBefore))}`);
    const match = /^(.*):([0-9a-f]{8}):(\d+)$/.exec(resumed.at(-1).lastEventId);
    assert(match && match[1] === "room.lobby", `Last-Event-ID ${resumed.at(-1).lastEventId}`);
    const offset = match[3];
    const lastSeen = (await lines()).filter((l) => before.includes(l.text)).at(-1).offset;
    assert(Number(offset) === lastSeen, `Last-Event-ID offset ${offset}, last seen ${lastSeen}`);
    note(`resumed with Last-Event-ID: ${resumed.at(-1).lastEventId}`);
  });

  await check("the gap is recovered from Redis: the missed messages exactly once, in order, and the page says recovered", async () => {
    await page.waitForFunction(() => document.body.dataset.recovered === "true", null, { timeout: 10_000 })
      .catch(async () => { throw new Error(`recovered=${await page.evaluate(() => document.body.dataset.recovered)}, banner: ${await page.textContent("#banner")}`); });
    const got = await waitForTexts([...before, ...missed]);
    const offsets = got.map((l) => l.offset);
    assert(offsets.every((o, j) => o === offsets[0] + j), `offsets not consecutive: ${offsets}`);
    const banner = await page.textContent("#banner");
    assert(/recovered, 3 missed messages replayed/.test(banner), `banner: ${banner}`);
  });

  await check("live messages keep arriving once after the recovery", async () => {
    await publishOverHttp(portB, "room.lobby", JSON.stringify({ user: "http", text: "after" }));
    await waitForTexts([...before, ...missed, "after"]);
    await sleep(500);
    await waitForTexts([...before, ...missed, "after"], 1_000);
    assert(await page.evaluate(() => document.body.dataset.transport) === "sse", "still on SSE");
    await page.screenshot({ path: path.join(artifacts, "sse-recovered.png") });
    note(`screenshot ${artifacts}/sse-recovered.png`);
  });

  await check("no script errors on the page", async () => {
    assert(pageErrors.length === 0, pageErrors.join("; "));
  });
} catch (error) {
  fail("unexpected error", error);
} finally {
  await browser.close();
  proxy.server.close();
  for (const socket of proxy.sockets) socket.destroy();
  for (const child of [...children]) await stopProcess(child);
}
console.log(`browser-sse: ${passed} passed, ${failed} failed, 0 skipped`);
process.exit(failed ? 1 : 0);
