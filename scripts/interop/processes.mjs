// Processes the Chromium checks start (servers, redis-server), each stopped by its PID: never by name.
// Shared by browser_cluster.mjs and browser_sse.mjs.

import { spawn } from "node:child_process";
import { openSync } from "node:fs";
import net from "node:net";

/** Every process started here and still running (stop them all at the end, or SIGKILL on a crash). */
export const children = new Set();

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Spawns `program args`, resolves once stdout matches `ready` (the match), rejects on exit or timeout. */
export function startProcess(name, program, args, ready, log) {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ["ignore", "pipe", openSync(log, "a")] });
    children.add(child);
    child.once("exit", () => children.delete(child));
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`${name} was not ready in 20 s (see ${log})`)), 20_000);
    child.once("error", (error) => { clearTimeout(timer); reject(new Error(`${name}: ${error.message}`)); });
    child.stdout.on("data", (chunk) => {
      buffer += chunk.toString();
      const match = buffer.match(ready);
      if (match) {
        clearTimeout(timer);
        buffer = "";
        child.stdout.removeAllListeners("data");
        child.stdout.resume(); // keep draining
        resolve({ child, match });
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready (see ${log})`));
    });
  });
}

export function stopProcess(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => { clearTimeout(force); resolve(); });
    child.kill("SIGTERM"); // by PID: child.pid
  });
}

/** A redis-server of the check's own on a free port (no persistence), its log in `log`. */
export async function startRedis(program, log) {
  const port = await freePort();
  const { child } = await startProcess("redis-server", program,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    /Ready to accept connections/, log);
  return { child, port };
}
