// A PGlite data directory is used by one process at a time: two would each keep their own view of
// its files, and the last to write would win, so work orders acknowledged by the other vanish. And
// it is made whole or not at all: PGlite's initdb writes into the directory, and one killed midway
// leaves files that no later start can read. So it is initialised beside the directory, and moved in
// entry by entry with PG_VERSION, which marks a database, last.
import { randomUUID } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** The claim's file, in the directory: Postgres passes over files it does not know there. */
const lockOf = (dir: string) => join(dir, "jobfleet.pid");
const INITIALISING = ".init-";

export class DataDirInUse extends Error {}

/** Directories this process holds, so that a lock file naming its pid from before a reboot is told apart. */
const held = new Set<string>();

/** Claims `dir` for this process; the function returned lets it go. */
export function claimDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const file = lockOf(dir);
  for (let attempt = 1; ; attempt++) {
    try {
      const fd = openSync(file, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      held.add(file);
      return () => {
        held.delete(file);
        rmSync(file, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number(readFileSync(file, "utf8"));
      if (held.has(file) || (holder !== process.pid && alive(holder)) || attempt === 3) {
        throw new DataDirInUse(`the data directory ${dir} is in use by process ${holder} (if no jobfleet runs as that process, remove ${file})`);
      }
      // Its process is gone (killed, or before a reboot): the claim is stale.
      rmSync(file, { force: true });
    }
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Makes a database in `dir` (claimed) with `create` unless it holds one, building it in a sibling
 * directory and moving it in; an earlier attempt's leftovers are cleared, in the sibling and in
 * `dir` (only the entries a database has, which without PG_VERSION are an interrupted move's).
 */
export async function initialiseDataDir(dir: string, create: (dir: string) => Promise<void>): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const prefix = `${basename(dir)}${INITIALISING}`;
  for (const name of readdirSync(dirname(dir))) if (name.startsWith(prefix)) rmSync(join(dirname(dir), name), { recursive: true, force: true });
  if (existsSync(join(dir, "PG_VERSION"))) return;
  const building = join(dirname(dir), `${prefix}${randomUUID()}`);
  try {
    await create(building);
    const entries = readdirSync(building).sort((a, b) => Number(a === "PG_VERSION") - Number(b === "PG_VERSION"));
    for (const name of entries) {
      rmSync(join(dir, name), { recursive: true, force: true });
      renameSync(join(building, name), join(dir, name));
    }
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
}
