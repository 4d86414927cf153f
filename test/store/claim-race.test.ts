// Two coordinators started together after a crash (a service manager's restart and a user's own
// start, say) both find the dead process's claim and take it over: one must find the other's. Found
// by a review: one removed the stale claim and linked its own, and the other then removed that.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, expect, test } from "vitest";

const RACER = fileURLToPath(new URL("./claim-racer.ts", import.meta.url));
const temps: string[] = [];
afterEach(() => {
  for (const temp of temps.splice(0)) rmSync(temp, { recursive: true, force: true });
});

async function gonePid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""]);
  await new Promise((resolve) => child.on("exit", resolve));
  return child.pid!;
}

function racer(base: string, count: number, start: number, stepMs: number): Promise<number[]> {
  const child = spawn(process.execPath, ["--import", "tsx", RACER, base, String(count), String(start), String(stepMs)], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (text: string) => (out += text));
  return new Promise((resolve, reject) => child.on("close", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`racer exited ${code}`)))));
}

test("two processes taking over the same stale claim at once: one holds the directory, never both", { timeout: 60_000 }, async () => {
  const base = mkdtempSync(join(tmpdir(), "jobfleet-claim-race-"));
  temps.push(base);
  const count = 300;
  const stale = `${await gonePid()} 1`;
  for (let i = 0; i < count; i++) {
    mkdirSync(join(base, String(i)), { mode: 0o700 });
    writeFileSync(join(base, String(i), "jobfleet.pid"), stale);
  }
  // Both loaded well before the first instant.
  const start = Date.now() + 5_000;
  const [a, b] = await Promise.all([racer(base, count, start, 10), racer(base, count, start, 10)]);
  expect(new Set([...a, ...b]).size).toBe(count);
  expect(a.filter((i) => b.includes(i))).toEqual([]);
});
