// Headless Chromium against the demo chat (web/demo.html on web/ringws.js) and a
// `--mode pubsub --history-size 100 --presence` server with JWT auth and a publish token:
//   - GET /ringws.js serves the library;
//   - two pages chat in a room; a third joins and sees the history and the presence list;
//   - a page whose connection drops (its traffic goes through a TCP proxy here that cuts every connection
//     and refuses new ones for a while) reconnects with jittered backoff and recovers the gap published
//     meanwhile over HTTP `POST /publish`: in order, no duplicate, no gap, the page says "recovered";
//   - the server is restarted on its port: every page reconnects (delays spread by the jitter), says
//     "not recovered" (one node: the history went with the process), presence heals, chat flows again;
//   - screenshots of the demo at desktop and phone sizes;
//   - the library alone: an auth refusal (401, which the browser sees as a socket that never opens) stops
//     the reconnects until setToken(); a 4001 (token expired) asks the token provider for a new token,
//     reconnects and recovers.
//
//   node browser_chat.mjs --artifacts DIR -- SERVER_COMMAND...
//
// The server is started here (SERVER_COMMAND serve --bind 127.0.0.1 --port P --mode pubsub ...), by PID,
// and stopped by PID. Prints one line per check and `N passed, N failed`.
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, openSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { chromium } from "playwright-core";
import { assert, waitForState, ready, say, chatLines, stopServer } from "./demo_page.mjs";

const argv = process.argv.slice(2);
const separator = argv.indexOf("--");
if (separator < 0) {
  console.error("usage: node browser_chat.mjs --artifacts DIR -- SERVER_COMMAND...");
  process.exit(2);
}
const options = Object.fromEntries(
  argv.slice(0, separator).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const serverCommand = argv.slice(separator + 1);
const artifacts = options.artifacts ?? "artifacts";
const work = path.join(artifacts, "browser-chat");
mkdirSync(work, { recursive: true });

let passed = 0;
let failed = 0;
const ok = (name) => { passed += 1; console.log(`ok   browser-chat ${name}`); };
const fail = (name, error) => { failed += 1; console.log(`FAIL browser-chat ${name}: ${error.message ?? error}`); };

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

// --- secrets and tokens --------------------------------------------------------------------------------

const secret = randomBytes(32).toString("hex");
const publishToken = randomBytes(16).toString("hex");
const secretFile = path.join(work, "jwt-secret");
const publishTokenFile = path.join(work, "publish-token");
writeFileSync(secretFile, secret, { mode: 0o600 });
writeFileSync(publishTokenFile, publishToken, { mode: 0o600 });

const b64url = (value) => Buffer.from(value).toString("base64url");
function jwt(user, { life = 3600, key = secret } = {}) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({
    sub: user,
    exp: Math.floor(Date.now() / 1000) + life,
    channels: { sub: ["room.*"], pub: ["room.*"] },
  }));
  const signature = createHmac("sha256", key).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

// --- the server, by PID ----------------------------------------------------------------------------------

function startServer(port) {
  return new Promise((resolve, reject) => {
    const [program, ...args] = serverCommand;
    const child = spawn(program, [
      ...args, "serve", "--bind", "127.0.0.1", "--port", String(port), "--mode", "pubsub",
      "--history-size", "100", "--presence",
      "--auth-jwt-secret-file", secretFile, "--publish-token-file", publishTokenFile,
    ], { stdio: ["ignore", "pipe", openSync(path.join(artifacts, "browser-chat-server.log"), "a")] });
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

// --- a TCP proxy that can cut its connections (a network drop, as the browser sees it) ---------------------

function startProxy(targetPort) {
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    const upstream = net.connect(targetPort, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const done = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on("error", done).on("close", done);
    upstream.on("error", done).on("close", done);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => resolve({
      port: server.address().port,
      // Every open connection is reset and new ones are refused (accepted and reset at once).
      cut() { refusing = true; for (const socket of sockets) socket.resetAndDestroy?.() ?? socket.destroy(); sockets.clear(); },
      restore() { refusing = false; },
      close() { for (const socket of sockets) socket.destroy(); server.close(); },
    }));
  });
}

async function publishOverHttp(port, topic, body) {
  const response = await fetch(`http://127.0.0.1:${port}/publish?topic=${topic}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${publishToken}` },
    body,
  });
  assert(response.status === 200, `POST /publish answered ${response.status}`);
}

// --- page helpers ------------------------------------------------------------------------------------------

async function sees(page, from, text, timeout = 10_000) {
  await page.waitForFunction(
    ([who, what]) => [...document.querySelectorAll("#log li")].some((li) => li.dataset.from === who && li.querySelector(".text")?.textContent === what),
    [from, text],
    { timeout },
  );
}

async function presenceOf(page) {
  return page.evaluate(() => [...document.querySelectorAll("#presence li")].map((li) => li.dataset.user).sort());
}

async function waitForPresence(page, users, timeout = 10_000) {
  await page.waitForFunction(
    (wanted) => JSON.stringify([...document.querySelectorAll("#presence li")].map((li) => li.dataset.user).sort()) === JSON.stringify(wanted),
    [...users].sort(),
    { timeout },
  ).catch(async () => { throw new Error(`presence is ${JSON.stringify(await presenceOf(page))}, expected ${JSON.stringify([...users].sort())}`); });
}

/** The reconnect delays the page's client chose (the `reconnecting` states), from index `from` on. */
async function reconnectDelays(page, from = 0) {
  return page.evaluate((start) => window.ringwsDemo.states.slice(start).filter((s) => s.state === "reconnecting").map((s) => s.delay), from);
}

// --- the run ---------------------------------------------------------------------------------------------

let server;
try {
  server = await startServer(0);
} catch (error) {
  fail("server starts", error);
  console.log(`browser-chat: ${passed} passed, ${failed} failed, 0 skipped`);
  process.exit(1);
}
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
    console.log(`FAIL browser-chat interrupted by ${signal}`);
    process.exit(1);
  });
}
const port = server.port;
const proxy = await startProxy(port);
const base = `http://127.0.0.1:${port}/`;
console.log(`browser-chat: server pid ${server.child.pid} on port ${port}, proxy on ${proxy.port}`);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const pageErrors = [];
async function openPage(user, { viewport = { width: 900, height: 640 }, via = port, room = "lobby", mobile = false } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: mobile ? 2 : 1, isMobile: mobile, hasTouch: mobile });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${user}: ${error.message}`));
  // A short backoff for the test: base 200 ms, cap 2 s (the page's defaults are 500 ms and 10 s).
  await page.goto(`http://127.0.0.1:${via}/?token=${jwt(user)}&room=${room}&backoff_base=200&backoff_cap=2000`);
  return page;
}

try {
  await check("GET /ringws.js serves the client library as JavaScript", async () => {
    const response = await fetch(`${base}ringws.js`);
    assert(response.status === 200, `status ${response.status}`);
    const type = response.headers.get("content-type") ?? "";
    assert(type.startsWith("application/javascript"), `content-type ${type}`);
    assert((await response.text()).includes("export class RingwsClient"), "no RingwsClient in the body");
  });

  const alice = await openPage("alice");
  const bob = await openPage("bob", { via: proxy.port });
  await check("two pages connect with ringws.v1 and a token, and enter room.lobby", async () => {
    await ready(alice);
    await ready(bob);
    assert(await alice.evaluate(() => document.body.dataset.room) === "lobby", "alice is not in lobby");
  });
  await check("two pages chat in a room", async () => {
    await say(alice, "Hello from Alice");
    await sees(bob, "alice", "Hello from Alice");
    await say(bob, "Hi Alice, Bob here");
    await sees(alice, "bob", "Hi Alice, Bob here");
  });

  const carol = await openPage("carol");
  await check("a third page joins and sees the history", async () => {
    await ready(carol);
    await sees(carol, "alice", "Hello from Alice");
    await sees(carol, "bob", "Hi Alice, Bob here");
    const lines = await chatLines(carol);
    assert(lines.length === 2, `carol has ${lines.length} lines: ${JSON.stringify(lines)}`);
    assert(lines[0].offset < lines[1].offset, `history out of order: ${JSON.stringify(lines)}`);
  });
  await check("the third page sees presence (alice, bob, carol), and the others see carol join", async () => {
    await waitForPresence(carol, ["alice", "bob", "carol"]);
    await waitForPresence(alice, ["alice", "bob", "carol"]);
  });

  const statesBefore = await bob.evaluate(() => window.ringwsDemo.states.length);
  await check("a dropped connection: the page says reconnecting, with jittered delays", async () => {
    proxy.cut();
    await bob.waitForFunction(() => document.body.dataset.state !== "open", null, { timeout: 10_000 });
    // Published while bob is away, over HTTP.
    for (const n of [1, 2, 3]) {
      await publishOverHttp(port, "room.lobby", JSON.stringify({ user: "http", text: `missed ${n}` }));
    }
    // Let bob fail a few attempts against the refusing proxy, then let it through.
    await bob.waitForFunction(
      (start) => window.ringwsDemo.states.slice(start).filter((s) => s.state === "reconnecting").length >= 3,
      statesBefore, { timeout: 15_000 },
    );
    const label = await bob.textContent("#state");
    assert(/^reconnecting in \d+\.\d s$/.test(label) || /connecting/.test(label), `state label ${label}`);
    proxy.restore();
    await waitForState(bob, "open", 15_000);
    const delays = await reconnectDelays(bob, statesBefore);
    console.log(`browser-chat: bob's reconnect delays (ms): ${delays.join(", ")}`);
    assert(delays.every((d) => d >= 0 && d < 2000), `a delay outside [0, cap): ${delays}`);
    assert(new Set(delays).size > 1, `no jitter: every delay is ${delays[0]}`);
  });
  await check("the page recovers the gap: in order, no duplicate, no gap, and says recovered", async () => {
    await bob.waitForFunction(() => document.body.dataset.recovered === "true", null, { timeout: 10_000 });
    for (const n of [1, 2, 3]) await sees(bob, "http", `missed ${n}`);
    const banner = await bob.textContent("#banner");
    assert(/recovered, 3 missed messages replayed/.test(banner), `banner: ${banner}`);
    await bob.screenshot({ path: path.join(artifacts, "demo-recovered.png") });
    await say(alice, "After the drop");
    await sees(bob, "alice", "After the drop");
    const lines = await chatLines(bob);
    const offsets = lines.map((l) => l.offset);
    const texts = lines.map((l) => l.text);
    assert(JSON.stringify(texts) === JSON.stringify(["Hello from Alice", "Hi Alice, Bob here", "missed 1", "missed 2", "missed 3", "After the drop"]),
      `bob's log: ${JSON.stringify(texts)}`);
    assert(offsets.every((o, i) => o === i + 1), `offsets not 1..${offsets.length}: ${offsets}`);
  });

  await check("server restarted on its port: every page reconnects, with spread delays", async () => {
    const marks = await Promise.all([alice, bob, carol].map((p) => p.evaluate(() => window.ringwsDemo.states.length)));
    await stopServer(server.child);
    for (const page of [alice, bob, carol]) await page.waitForFunction(() => document.body.dataset.state !== "open", null, { timeout: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    server = await startServer(port);
    for (const page of [alice, bob, carol]) await waitForState(page, "open", 20_000);
    const delays = [];
    for (const [i, page] of [alice, bob, carol].entries()) delays.push(...await reconnectDelays(page, marks[i]));
    const opens = await Promise.all([alice, bob, carol].map((p, i) => p.evaluate((start) => window.ringwsDemo.states.slice(start).filter((s) => s.state === "open").map((s) => s.at)[0], marks[i])));
    console.log(`browser-chat: restart reconnect delays (ms): ${delays.join(", ")}; opens spread over ${Math.max(...opens) - Math.min(...opens)} ms`);
    assert(new Set(delays).size > 1, `no jitter: ${delays}`);
  });
  await check("after the restart: the pages say not recovered (the history went with the process)", async () => {
    for (const page of [alice, bob, carol]) {
      await page.waitForFunction(() => document.body.dataset.recovered === "false", null, { timeout: 10_000 });
      const banner = await page.textContent("#banner");
      assert(/not recovered/.test(banner), `banner: ${banner}`);
    }
  });
  await check("after the restart: presence heals and chat flows again", async () => {
    await waitForPresence(carol, ["alice", "bob", "carol"]);
    await say(bob, "Back after the restart");
    await sees(alice, "bob", "Back after the restart");
    await sees(carol, "bob", "Back after the restart");
    const texts = (await chatLines(alice)).map((l) => l.text);
    assert(texts.filter((t) => t === "After the drop").length === 1, `duplicates in alice's log: ${JSON.stringify(texts)}`);
  });

  await check("screenshots of the demo at desktop and phone sizes", async () => {
    await say(carol, "Phone and desktop screenshots next");
    await alice.setViewportSize({ width: 1280, height: 800 });
    await sees(alice, "carol", "Phone and desktop screenshots next");
    await alice.screenshot({ path: path.join(artifacts, "demo-desktop.png") });
    const phone = await openPage("dave", { viewport: { width: 390, height: 844 }, mobile: true });
    await ready(phone);
    await sees(phone, "carol", "Phone and desktop screenshots next");
    await waitForPresence(phone, ["alice", "bob", "carol", "dave"]);
    await phone.screenshot({ path: path.join(artifacts, "demo-phone.png") });
    await bob.screenshot({ path: path.join(artifacts, "demo-bob.png") });
    console.log(`browser-chat: screenshots ${artifacts}/demo-desktop.png, demo-phone.png, demo-bob.png, demo-recovered.png`);
  });

  // The library alone, in a page of the server's origin (it imports /ringws.js).
  const libraryPage = await (await browser.newContext()).newPage();
  libraryPage.on("pageerror", (error) => pageErrors.push(`library page: ${error.message}`));
  await libraryPage.goto(`${base}healthz`);
  const wsUrl = base.replace("http://", "ws://");
  await check("an auth refusal stops the reconnects until setToken(), which connects", async () => {
    const result = await libraryPage.evaluate(async ({ url, bad, good }) => {
      const { RingwsClient } = await import("/ringws.js");
      const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      const until = async (test, ms) => { const end = Date.now() + ms; while (!test()) { if (Date.now() > end) return false; await sleep(20); } return true; };
      const states = [];
      const client = new RingwsClient(url, { token: bad, backoff: { base: 50, cap: 200 }, authProbeAfter: 2, onState: (s) => states.push(s) });
      client.connect();
      if (!(await until(() => client.state === "closed", 10_000))) return `never stopped: ${JSON.stringify(states.slice(-3))}`;
      const reason = states.at(-1).reason;
      const attempts = states.filter((s) => s.state === "connecting").length;
      await sleep(1_000);
      const later = states.filter((s) => s.state === "connecting").length;
      client.setToken(good);
      const opened = await until(() => client.state === "open", 10_000);
      client.close();
      return { reason, attempts, later, opened };
    }, { url: wsUrl, bad: jwt("mallory", { key: "another secret" }), good: jwt("mallory") });
    assert(typeof result === "object", result);
    console.log(`browser-chat: refused after ${result.attempts} attempts`);
    assert(result.reason === "auth", `stopped for ${result.reason}`);
    assert(result.later === result.attempts, `${result.later - result.attempts} attempts after stopping`);
    assert(result.opened, "setToken() did not connect");
  });
  await check("4001 (token expired): the provider gives a new token, the client reconnects and recovers", async () => {
    const topic = "room.expiry";
    const result = await libraryPage.evaluate(async ({ url, tokens, topic }) => {
      const { RingwsClient } = await import("/ringws.js");
      const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
      const until = async (test, ms) => { const end = Date.now() + ms; while (!test()) { if (Date.now() > end) return false; await sleep(20); } return true; };
      const reasons = [];
      const states = [];
      const subscribed = [];
      const received = [];
      const client = new RingwsClient(url, {
        backoff: { base: 50, cap: 200 },
        tokenProvider: (reason) => { reasons.push(reason); return tokens.shift(); },
        onState: (s) => states.push(s),
      });
      client.subscribe(topic, { onSubscribed: (s) => subscribed.push(s), onMessage: (p) => received.push(p) });
      client.connect();
      if (!(await until(() => subscribed.length === 1, 10_000))) return "not subscribed";
      await client.publish(topic, "before expiry");
      if (!(await until(() => subscribed.length === 2, 10_000))) return `no resubscription: ${JSON.stringify(states)}`;
      const closeCodes = states.filter((s) => s.state === "reconnecting").map((s) => s.code);
      client.close();
      return { reasons, closeCodes, second: subscribed[1], received: received.map((p) => [p.offset, p.data]) };
    }, { url: wsUrl, tokens: [jwt("erin", { life: 2 }), jwt("erin")], topic });
    assert(typeof result === "object", result);
    assert(JSON.stringify(result.reasons) === JSON.stringify(["initial", "expired"]), `provider reasons ${result.reasons}`);
    assert(result.closeCodes[0] === 4001, `close codes ${result.closeCodes}`);
    assert(result.second.resubscribed && result.second.recovered === true, `second subscription ${JSON.stringify(result.second)}`);
    assert(JSON.stringify(result.received) === JSON.stringify([[1, "before expiry"]]), `received ${JSON.stringify(result.received)}`);
  });

  await check("no script errors on the pages", async () => {
    assert(pageErrors.length === 0, pageErrors.join("; "));
  });
} catch (error) {
  fail("unexpected error", error);
} finally {
  await browser.close();
  proxy.close();
  await stopServer(server.child);
}
console.log(`browser-chat: ${passed} passed, ${failed} failed, 0 skipped`);
process.exit(failed ? 1 : 0);
