// What the headless Chromium checks share (browser.mjs, browser_chat.mjs, browser_cluster.mjs): the demo
// page's states and chat, and stopping a server they started (by PID).

/** Throws `message` unless `condition`. */
export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** Waits until the demo page's connection state (`body[data-state]`) is `state`. */
export async function waitForState(page, state, timeout = 15_000) {
  await page.waitForFunction((wanted) => document.body.dataset.state === wanted, state, { timeout });
}

/** Waits until the demo page speaks the pub/sub protocol and its message box is enabled. */
export async function ready(page) {
  await page.waitForFunction(() => document.body.dataset.mode === "pubsub" && !document.getElementById("text").disabled, null, { timeout: 15_000 });
}

/** Sends `text` from the page's message box (and waits until the box is cleared). */
export async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#send");
  await page.waitForFunction(() => document.getElementById("text").value === "", null, { timeout: 10_000 });
}

/** The log's chat lines: [{from, text, offset}]. */
export async function chatLines(page) {
  return page.evaluate(() => [...document.querySelectorAll("#log li.chat")].map((li) => ({
    from: li.dataset.from, text: li.querySelector(".text").textContent, offset: Number(li.dataset.offset),
  })));
}

/** SIGTERM to a child process started here (by its PID), SIGKILL after 10 s; resolves once it exited. */
export function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => { clearTimeout(force); resolve(); });
    child.kill("SIGTERM"); // by PID: child.pid
  });
}
