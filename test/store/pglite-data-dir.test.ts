// A PGlite data directory is one process's at a time, and is made whole or not at all: a start
// killed while it makes the database leaves a directory the next start can use.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { afterEach, expect, test, vi } from "vitest";
import { openDatabase } from "../../coordinator/db/database.ts";
import { claimDataDir, DataDirInUse, initialiseDataDir } from "../../coordinator/db/pglite-data-dir.ts";
import { jobfleet } from "../support/processes.ts";
import { until } from "../support/until.ts";

const temps: string[] = [];
afterEach(() => {
  for (const temp of temps.splice(0)) rmSync(temp, { recursive: true, force: true });
});
const fresh = () => {
  const temp = mkdtempSync(join(tmpdir(), "jobfleet-data-dir-"));
  temps.push(temp);
  return { temp, dir: join(temp, ".jobfleet") };
};

/** The pid of a process that has exited. */
async function gonePid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""]);
  await new Promise((resolve) => child.on("exit", resolve));
  return child.pid!;
}

test("a data directory in use is refused, by this process or another one alive; a claim whose process is gone is taken over", async () => {
  const { dir } = fresh();
  const db = await openDatabase({ kind: "pglite", dataDir: dir });
  await expect(openDatabase({ kind: "pglite", dataDir: dir })).rejects.toThrow(DataDirInUse);
  await db.close();
  // Another process holds it: the test runner's parent is alive.
  writeFileSync(join(dir, "jobfleet.pid"), String(process.ppid));
  await expect(openDatabase({ kind: "pglite", dataDir: dir })).rejects.toThrow(`in use by process ${process.ppid}`);
  // Its pid taken again by a process that started later (a container restarted): not the holder.
  writeFileSync(join(dir, "jobfleet.pid"), `${process.ppid} 1`);
  await (await openDatabase({ kind: "pglite", dataDir: dir })).close();
  writeFileSync(join(dir, "jobfleet.pid"), String(await gonePid()));
  const reopened = await openDatabase({ kind: "pglite", dataDir: dir });
  expect(await reopened.query("SELECT count(*)::int AS n FROM work_orders")).toEqual([{ n: 0 }]);
  await reopened.close();
  expect(existsSync(join(dir, "jobfleet.pid"))).toBe(false);
});

test("a database is moved in only once it is whole: one whose making failed midway leaves no PG_VERSION, and the next is made", async () => {
  const { temp, dir } = fresh();
  // As initdb killed after it wrote PG_VERSION, and as one killed once it had finished.
  const partial = async (building: string) => {
    mkdirSync(building, { recursive: true });
    writeFileSync(join(building, "PG_VERSION"), "17\n");
    throw new Error("killed");
  };
  const whole = async (building: string) => {
    await (await PGlite.create(building)).close();
    throw new Error("killed");
  };
  for (const create of [partial, whole]) {
    await expect(initialiseDataDir(dir, create)).rejects.toThrow("killed");
    expect(readdirSync(dir)).toEqual([]);
  }
  await initialiseDataDir(dir, async (building) => (await PGlite.create(building)).close());
  expect(existsSync(join(dir, "PG_VERSION"))).toBe(true);
  expect(readdirSync(dir).filter((name) => name.startsWith("."))).toEqual([]);
  expect(readdirSync(temp)).toEqual([".jobfleet"]);
  const db = await openDatabase({ kind: "pglite", dataDir: dir });
  expect(await db.query("SELECT count(*)::int AS n FROM work_orders")).toEqual([{ n: 0 }]);
  await db.close();
});

test("a first start killed while it makes the database leaves a directory the next start makes it in", { timeout: 90_000 }, async () => {
  const { dir } = fresh();
  mkdirSync(dir);
  const first = jobfleet(["coordinator", "--data-dir", dir, "--listen", "127.0.0.1:0"]);
  try {
    // Killed once initdb has begun to write the database, wherever it writes it.
    const begun = () => existsSync(dir) && readdirSync(dir).some((name) => existsSync(join(dir, name, "PG_VERSION")) || name === "PG_VERSION");
    // Or it exits first, which is no start to kill: said so, not waited out. A start under the
    // whole suite's load took 15.5 s to begin it in one clean-clone run, and over 20 in another.
    await Promise.race([until(begun, "the database to be begun", 60_000), first.exited.then((exit) => Promise.reject(new Error(`it exited first: ${exit.stderr}`)))]);
  } finally {
    await first.stop("SIGKILL");
  }
  const db = await openDatabase({ kind: "pglite", dataDir: dir });
  expect(await db.query("SELECT count(*)::int AS n FROM work_orders")).toEqual([{ n: 0 }]);
  await db.close();
  expect(readdirSync(dir).filter((name) => name.startsWith("."))).toEqual([]);
});

test("a data directory that is a symlink to another filesystem (a mounted volume) is made and opened", async () => {
  const { temp, dir } = fresh();
  const elsewhere = mkdtempSync(join("/dev/shm", "jobfleet-volume-"));
  temps.push(elsewhere);
  symlinkSync(elsewhere, dir);
  const db = await openDatabase({ kind: "pglite", dataDir: dir });
  await db.close();
  expect(existsSync(join(elsewhere, "PG_VERSION"))).toBe(true);
  expect(readdirSync(temp)).toEqual([".jobfleet"]);
});

test("a database that fails to open (a migration refused) is closed before its directory is released", async () => {
  const { dir } = fresh();
  await (await openDatabase({ kind: "pglite", dataDir: dir })).close();
  // A table the first migration would create, under another shape: drizzle's record of the migrations gone with it.
  const raw = await PGlite.create(dir);
  await raw.exec("DROP SCHEMA drizzle CASCADE; DROP TABLE work_order_events");
  await raw.exec("CREATE TABLE work_order_events (x int)");
  await raw.close();
  const close = PGlite.prototype.close;
  const claimedAtClose: boolean[] = [];
  const closes = vi.spyOn(PGlite.prototype, "close").mockImplementation(function (this: PGlite) {
    claimedAtClose.push(existsSync(join(dir, "jobfleet.pid")));
    return close.call(this);
  });
  try {
    await expect(openDatabase({ kind: "pglite", dataDir: dir })).rejects.toThrow();
    expect(claimedAtClose).toEqual([true]);
    expect(existsSync(join(dir, "jobfleet.pid"))).toBe(false);
  } finally {
    closes.mockRestore();
  }
});

test("a data directory is made its owner's alone when claimed, or used with a warning if it cannot be", async () => {
  const { temp, dir } = fresh();
  mkdirSync(dir, { mode: 0o777 });
  chmodSync(dir, 0o777);
  claimDataDir(dir)();
  expect(statSync(dir).mode & 0o777).toBe(0o700);
  const made = join(temp, "made", "deeper");
  claimDataDir(made)();
  expect(statSync(made).mode & 0o777).toBe(0o700);
  // A directory open to others whose mode no one may change, not even root (a volume another user owns).
  const warnings: Error[] = [];
  const warned = (warning: Error) => warnings.push(warning);
  process.on("warning", warned);
  try {
    expect(() => claimDataDir("/proc/self")).toThrow(); // its claim file cannot be written there
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
  } finally {
    process.off("warning", warned);
  }
  expect(warnings.map((w) => [(w as NodeJS.ErrnoException).code, w.message])).toEqual([
    ["JOBFLEET_DATA_DIR_OPEN", expect.stringContaining("the data directory /proc/self is open to other users (mode 555)")],
  ]);
});

test("a directory that holds other files and no database is refused, its files left as they were", async () => {
  const { dir } = fresh();
  mkdirSync(join(dir, "base"), { recursive: true });
  writeFileSync(join(dir, "base", "kustomization.yaml"), "resources: []\n");
  writeFileSync(join(dir, "README.md"), "mine\n");
  // Found by a review: `--data-dir .` in a kustomize layout had its base/ replaced by the database's.
  await expect(initialiseDataDir(dir, async (building) => (await PGlite.create(building)).close())).rejects.toThrow(
    "it holds no database and is not empty (README.md, base): give an empty or new directory",
  );
  expect(readdirSync(dir).sort()).toEqual(["README.md", "base"]);
  expect(readdirSync(join(dir, "base"))).toEqual(["kustomization.yaml"]);
});

test("a volume's root, with its lost+found, is made a database in, the lost+found left alone", async () => {
  const { dir } = fresh();
  mkdirSync(join(dir, "lost+found"), { recursive: true });
  await initialiseDataDir(dir, async (building) => (await PGlite.create(building)).close());
  expect(existsSync(join(dir, "PG_VERSION"))).toBe(true);
  expect(readdirSync(join(dir, "lost+found"))).toEqual([]);
});

test("a move cut short is finished by the next start, over the entries it had moved", async () => {
  const { dir } = fresh();
  await initialiseDataDir(dir, async (building) => (await PGlite.create(building)).close());
  // As a start killed while it moved the entries up: PG_VERSION, moved last, is not there yet.
  rmSync(join(dir, "PG_VERSION"));
  writeFileSync(join(dir, "jobfleet.moving"), "");
  await initialiseDataDir(dir, async (building) => (await PGlite.create(building)).close());
  expect(existsSync(join(dir, "jobfleet.moving"))).toBe(false);
  const db = await openDatabase({ kind: "pglite", dataDir: dir });
  expect(await db.query("SELECT count(*)::int AS n FROM work_orders")).toEqual([{ n: 0 }]);
  await db.close();
});

test("a claim made in another container or host (its pid means nothing here) holds while its holder touches it, and is taken over once it stops", async () => {
  const { dir } = fresh();
  mkdirSync(dir);
  const claim = join(dir, "jobfleet.pid");
  // Found by a review: two containers on one volume are both pid 1, and each took the other's claim
  // for its own from before a restart; in a manual run both served the directory and gave out the same ids.
  for (const pid of [process.pid, 1]) {
    writeFileSync(claim, `${pid} 42 other-container/pid:[4026532999]`);
    expect(() => claimDataDir(dir)).toThrow(`in use by process ${pid} of other-container (another container or host; its claim is taken over once untouched for 30 s)`);
  }
  const minuteAgo = new Date(Date.now() - 60_000);
  utimesSync(claim, minuteAgo, minuteAgo);
  vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
  try {
    const release = claimDataDir(dir);
    utimesSync(claim, minuteAgo, minuteAgo);
    // Its holder touches it, so that the other side sees it held.
    vi.advanceTimersByTime(5_000);
    expect(Date.now() - statSync(claim).mtimeMs).toBeLessThan(10_000);
    release();
    expect(existsSync(claim)).toBe(false);
  } finally {
    vi.useRealTimers();
  }
});

