// Headless Chromium against the demo chat (web/demo.html on web/ringws.js) on two nodes joined through
// Redis (`--mode pubsub --broker redis://127.0.0.1:P --history-size 100 --presence`, JWT auth and a publish
// token), the cross-node restart:
//   - three pages on node A and one on node B chat in one room, and each lists all four in its presence;
//   - node A is stopped (SIGTERM); three messages are published over HTTP `POST /publish` to node B while A is
//     down (B's page sees them); A is started again on the same port;
//   - A's pages reconnect (the times of their attempts are printed: the jitter spreads them), each recovers
//     the gap from Redis: exactly the missed messages, once, in order, offsets without a hole, and the page
//     says "recovered, 3 missed messages replayed";
//   - presence heals on every page (A's pages list the page on B and each other, B's page lists A's again);
//   - chat flows both ways across the nodes afterwards;
//   - a screenshot after the recovery (DIR/cluster-recovered.png, DIR/cluster-node-b.png).
//
//   node browser_cluster.mjs --artifacts DIR [--redis-server PATH] -- SERVER_COMMAND...
//
// Redis (`redis-server --port P --save '' --appendonly no`, on a free loopback port) and both nodes are
// started here, by PID, and stopped by PID. Prints one line per check and `N passed, N failed`.
import { createHmac, randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { children, startProcess, startRedis, stopProcess } from "./processes.mjs";
import { assert, waitForState, ready, say, chatLines } from "./demo_page.mjs";

const argv = process.argv.slice(2);
const separator = argv.indexOf("--");
if (separator < 0) {
  console.error("usage: node browser_cluster.mjs --artifacts DIR [--redis-server PATH] -- SERVER_COMMAND...");
  process.exit(2);
}
const options = Object.fromEntries(
  argv.slice(0, separator).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const serverCommand = argv.slice(separator + 1);
const artifacts = options.artifacts ?? "artifacts";
const redisProgram = options["redis-server"] ?? "redis-server";
const work = path.join(artifacts, "browser-cluster");
mkdirSync(work, { recursive: true });

let passed = 0;
let failed = 0;
let skipped = 0;
const ok = (name) => { passed += 1; console.log(`ok   browser-cluster ${name}`); };
const fail = (name, error) => { failed += 1; console.log(`FAIL browser-cluster ${name}: ${error.message ?? error}`); };
const note = (text) => console.log(`browser-cluster: ${text}`);

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
function jwt(user, { life = 3600 } = {}) {
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({
    sub: user,
    exp: Math.floor(Date.now() / 1000) + life,
    channels: { sub: ["room.*"], pub: ["room.*"] },
  }));
  const signature = createHmac("sha256", secret).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

// --- processes, by PID -------------------------------------------------------------------------------------

async function startRedisHere() {
  return startRedis(redisProgram, path.join(artifacts, "browser-cluster-redis.log"));
}

async function startNode(name, port, redisPort) {
  const [program, ...args] = serverCommand;
  const { child, match } = await startProcess(`node ${name}`, program, [
    ...args, "serve", "--bind", "127.0.0.1", "--port", String(port), "--mode", "pubsub",
    "--broker", `redis://127.0.0.1:${redisPort}`, "--history-size", "100", "--presence",
    "--auth-jwt-secret-file", secretFile, "--publish-token-file", publishTokenFile,
  ], /ringws listening on ([\d.]+):(\d+)/, path.join(artifacts, `browser-cluster-node-${name}.log`));
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

// --- page helpers ------------------------------------------------------------------------------------------

async function sees(page, from, text, timeout = 10_000) {
  await page.waitForFunction(
    ([who, what]) => [...document.querySelectorAll("#log li")].some((li) => li.dataset.from === who && li.querySelector(".text")?.textContent === what),
    [from, text],
    { timeout },
  ).catch(() => { throw new Error(`no line "${text}" from ${from} in ${timeout} ms`); });
}

/** The presence list: "user" for a user with one connection, "user xN" for N connections, sorted. */
async function presenceOf(page) {
  return page.evaluate(() => [...document.querySelectorAll("#presence li")]
    .map((li) => { const count = li.querySelector(".count"); return count ? `${li.dataset.user} x${count.textContent.replace(/\D/g, "")}` : li.dataset.user; })
    .sort());
}

/**
 * Waits until the presence list names exactly `users`; with `single`, each with one connection (no stale
 * member left over from before a restart).
 */
async function waitForPresence(page, users, { timeout = 10_000, single = false } = {}) {
  const wanted = JSON.stringify([...users].sort());
  const end = Date.now() + timeout;
  const seen = async () => (await presenceOf(page)).map((entry) => (single ? entry : entry.replace(/ x\d+$/, "")));
  let list;
  while (JSON.stringify(list = await seen()) !== wanted) {
    if (Date.now() > end) throw new Error(`presence is ${JSON.stringify(await presenceOf(page))}, expected ${wanted}`);
    await sleep(100);
  }
}

/** The page's state changes from index `from` on ({at, state, delay, ...}). */
async function statesSince(page, from) {
  return page.evaluate((start) => window.ringwsDemo.states.slice(start), from);
}

// --- the run ---------------------------------------------------------------------------------------------

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    for (const child of children) child.kill("SIGKILL");
    console.log(`FAIL browser-cluster interrupted by ${signal}`);
    process.exit(1);
  });
}

let redis;
let nodeA;
let nodeB;
try {
  redis = await startRedisHere();
  nodeA = await startNode("a", 0, redis.port);
  nodeB = await startNode("b", 0, redis.port);
} catch (error) {
  fail("redis and two nodes start", error);
  for (const child of children) await stopProcess(child);
  console.log(`browser-cluster: ${passed} passed, ${failed} failed, 0 skipped`);
  process.exit(1);
}
const portA = nodeA.port;
const portB = nodeB.port;
note(`redis pid ${redis.child.pid} on port ${redis.port}; node A pid ${nodeA.child.pid} on port ${portA}; node B pid ${nodeB.child.pid} on port ${portB}`);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const pageErrors = [];
async function openPage(user, port) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${user}: ${error.message}`));
  // A short backoff for the test: base 200 ms, cap 2 s (the page's defaults are 500 ms and 10 s).
  await page.goto(`http://127.0.0.1:${port}/?token=${jwt(user)}&room=lobby&backoff_base=200&backoff_cap=2000`);
  return page;
}

// A node stopped with SIGTERM sends the presence leaves of only some of its members to Redis (its broker
// publisher stops at the shutdown flag, before the workers' leaves of the 1001 closes are written): the other
// nodes' pages keep those members, and after the restart both the old and the new connections are listed.
const everyone = ["alice", "bob", "carol", "dave"];
const before = ["Hello from Alice on A", "Hi all, Dave on B"];
const missed = ["missed 1", "missed 2", "missed 3"];
try {
  const alice = await openPage("alice", portA);
  const bob = await openPage("bob", portA);
  const carol = await openPage("carol", portA);
  const dave = await openPage("dave", portB);
  const onA = [alice, bob, carol];
  const pages = [...onA, dave];

  await check("three pages on node A and one on node B enter room.lobby", async () => {
    for (const page of pages) await ready(page);
  });
  await check("presence across nodes: every page lists alice, bob, carol (A) and dave (B), once each", async () => {
    for (const page of pages) await waitForPresence(page, everyone, { single: true });
  });
  await check("chat across nodes before the restart (A to B and B to A)", async () => {
    await say(alice, before[0]);
    for (const page of [bob, carol, dave]) await sees(page, "alice", before[0]);
    await say(dave, before[1]);
    for (const page of onA) await sees(page, "dave", before[1]);
  });

  const marks = await Promise.all(onA.map((p) => p.evaluate(() => window.ringwsDemo.states.length)));
  let stoppedAt = 0;
  await check("node A stopped: its pages say reconnecting, node B's page stays open", async () => {
    stoppedAt = Date.now();
    await stopProcess(nodeA.child);
    for (const page of onA) await page.waitForFunction(() => document.body.dataset.state !== "open", null, { timeout: 10_000 });
    assert(await dave.evaluate(() => document.body.dataset.state) === "open", "dave's page is not open");
  });
  await check("node A's members leave the presence list of node B's page", async () => {
    await waitForPresence(dave, ["dave"], { timeout: 5_000, single: true });
    note(`dave's presence list is ["dave"] ${Date.now() - stoppedAt} ms after the stop`);
  });
  await check("published over HTTP to node B while A is down: B's page sees the messages", async () => {
    for (const text of missed) await publishOverHttp(portB, "room.lobby", JSON.stringify({ user: "http", text }));
    for (const text of missed) await sees(dave, "http", text);
    // Let A's pages fail a few attempts against the closed port.
    for (const [i, page] of onA.entries()) {
      await page.waitForFunction(
        (start) => window.ringwsDemo.states.slice(start).filter((s) => s.state === "reconnecting").length >= 3,
        marks[i], { timeout: 15_000 },
      );
    }
  });

  await check("node A started again on its port: A's pages reconnect, their attempts spread by the jitter", async () => {
    nodeA = await startNode("a", portA, redis.port);
    const startedAt = Date.now();
    note(`node A restarted, pid ${nodeA.child.pid}, ${startedAt - stoppedAt} ms after the stop`);
    for (const page of onA) await waitForState(page, "open", 20_000);
    const delays = [];
    const opens = [];
    for (const [i, page] of onA.entries()) {
      const states = await statesSince(page, marks[i]);
      const attempts = states.filter((s) => s.state === "connecting").map((s) => s.at - stoppedAt);
      const waits = states.filter((s) => s.state === "reconnecting").map((s) => s.delay);
      const open = states.find((s) => s.state === "open");
      delays.push(...waits);
      opens.push(open.at);
      note(`${["alice", "bob", "carol"][i]}: attempts at +${attempts.join(", +")} ms after the stop (delays ${waits.join(", ")} ms), open at +${open.at - stoppedAt} ms`);
    }
    note(`opens spread over ${Math.max(...opens) - Math.min(...opens)} ms (node A up at +${startedAt - stoppedAt} ms)`);
    assert(delays.every((d) => d >= 0 && d < 2000), `a delay outside [0, cap): ${delays}`);
    assert(new Set(delays.filter((d) => d > 0)).size > 1, `no jitter: ${delays}`);
  });

  await check("A's pages recover the gap from Redis: the missed messages exactly once, in order, and say recovered", async () => {
    for (const [i, page] of onA.entries()) {
      const name = everyone[i];
      await page.waitForFunction(() => document.body.dataset.recovered === "true", null, { timeout: 10_000 })
        .catch(async () => { throw new Error(`${name}: recovered=${await page.evaluate(() => document.body.dataset.recovered)}, banner: ${await page.textContent("#banner")}`); });
      for (const text of missed) await sees(page, "http", text);
      const banner = await page.textContent("#banner");
      assert(/recovered, 3 missed messages replayed/.test(banner), `${name}'s banner: ${banner}`);
      const lines = await chatLines(page);
      const texts = lines.map((l) => l.text);
      const offsets = lines.map((l) => l.offset);
      assert(JSON.stringify(texts) === JSON.stringify([...before, ...missed]), `${name}'s log: ${JSON.stringify(texts)}`);
      assert(offsets.every((o, j) => o === offsets[0] + j), `${name}'s offsets not consecutive: ${offsets}`);
    }
    await alice.screenshot({ path: path.join(artifacts, "cluster-recovered.png") });
    note(`screenshot ${artifacts}/cluster-recovered.png`);
  });

  await check("presence heals: every page lists alice, bob, carol and dave again", async () => {
    for (const [i, page] of pages.entries()) {
      await waitForPresence(page, everyone).catch((error) => { throw new Error(`${everyone[i]}'s page: ${error.message}`); });
    }
  });
  await check("presence heals without stale members: one connection each", async () => {
    for (const [i, page] of pages.entries()) {
      await waitForPresence(page, everyone, { timeout: 3_000, single: true })
        .catch((error) => { throw new Error(`${everyone[i]}'s page: ${error.message}`); });
    }
  });

  await check("chat flows both ways across the nodes after the restart, no duplicates", async () => {
    await say(bob, "Back on A");
    await sees(dave, "bob", "Back on A");
    await say(dave, "Welcome back from B");
    for (const page of onA) await sees(page, "dave", "Welcome back from B");
    await sees(carol, "bob", "Back on A");
    const expected = [...before, ...missed, "Back on A", "Welcome back from B"];
    for (const [i, page] of pages.entries()) {
      const lines = await chatLines(page);
      const texts = lines.map((l) => l.text);
      const offsets = lines.map((l) => l.offset);
      assert(JSON.stringify(texts) === JSON.stringify(expected), `${everyone[i]}'s log: ${JSON.stringify(texts)}`);
      assert(offsets.every((o, j) => o === offsets[0] + j), `${everyone[i]}'s offsets not consecutive: ${offsets}`);
    }
    await dave.screenshot({ path: path.join(artifacts, "cluster-node-b.png") });
  });

  await check("no script errors on the pages", async () => {
    assert(pageErrors.length === 0, pageErrors.join("; "));
  });
} catch (error) {
  fail("unexpected error", error);
} finally {
  await browser.close();
  for (const child of [...children]) await stopProcess(child);
}
console.log(`browser-cluster: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed ? 1 : 0);
