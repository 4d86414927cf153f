// A PGlite data directory is used by one process at a time: two would each keep their own view of
// its files, and the last to write would win, so work orders acknowledged by the other vanish. And
// it is made whole or not at all: PGlite's initdb writes into the directory, and one killed midway
// leaves files that no later start can read. So it is made in a directory inside it (the same
// filesystem, so a mount point or a symlinked directory works, and no write beside it), then moved
// up entry by entry, PG_VERSION, which marks a database, last.
import { randomUUID } from "node:crypto";
import { chmodSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

/** The claim's file, in the directory: Postgres passes over files it does not know there. */
const CLAIM = "jobfleet.pid";
const BUILDING = ".init-";
/** There while a made database's entries are moved up: what a move cut short left is ours to replace. */
const MOVING = "jobfleet.moving";

/** The CI token `jobfleet start` saves for the CLI of its checkout: there with or without a database (one on Postgres). */
export const CI_TOKEN_FILE = "ci-token";

/**
 * What a data directory may hold before it holds a database: ours (the CI token with the file it is
 * written to first), and the `lost+found` of a volume mounted there.
 */
const expectedBeforeDatabase = (name: string) => name === "lost+found" || [CLAIM, BUILDING, MOVING, CI_TOKEN_FILE].some((prefix) => name.startsWith(prefix));

export class DataDirInUse extends Error {}

/** Claims held by this process, so that a claim naming its own pid from before a restart is told apart. */
const held = new Set<string>();

/**
 * Where a pid means one process: this host's pid namespace. A claim made in another (another
 * container on a shared volume, where both may be pid 1; another host) is judged by its age instead:
 * its holder touches it every TOUCH_MS, and one untouched for STALE_MS is stale.
 */
const SCOPE = `${hostname()}/${pidNamespace()}`;
const TOUCH_MS = 5_000;
const STALE_MS = 30_000;

function pidNamespace(): string {
  try {
    return readlinkSync("/proc/self/ns/pid");
  } catch {
    return "";
  }
}

/** Claims `dir` for this process; the function returned lets it go. */
export function claimDataDir(dir: string): () => void {
  makePrivate(dir);
  const file = join(dir, CLAIM);
  const ours = `${process.pid} ${startOf(process.pid) ?? ""} ${SCOPE}`;
  // Written whole beside it, then linked into place: a reader never sees a claim half written.
  const draft = join(dir, `${CLAIM}.${randomUUID()}`);
  writeFileSync(draft, ours, { mode: 0o600 });
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        linkSync(draft, file);
        held.add(file);
        const touch = setInterval(() => {
          try {
            utimesSync(file, new Date(), new Date());
          } catch {
            // Removed by hand: nothing to touch.
          }
        }, TOUCH_MS).unref();
        return () => {
          clearInterval(touch);
          held.delete(file);
          if (readFileSync(file, "utf8") === ours) rmSync(file, { force: true });
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const found = read(file);
        // Moved aside by another start meanwhile: look again.
        if (!found) continue;
        const { claim, touchedMs } = found;
        if (held.has(file) || holds(claim, touchedMs) || attempt === 3) {
          const [pid, , scope] = claim.split(" ");
          const where = scope === undefined || scope === SCOPE ? "" : ` of ${scope.split("/")[0]} (another container or host; its claim is taken over once untouched for ${STALE_MS / 1000} s)`;
          throw new DataDirInUse(`the data directory ${dir} is in use by process ${pid}${where} (if no jobfleet runs as that process, remove ${file})`);
        }
        // Its process is gone (killed, or before a restart): the claim is stale. Moved aside, not
        // removed, so that of two starts taking it at once the second cannot remove the first's new
        // claim in its place: what it moved aside, if not the stale claim, is put back.
        const aside = `${draft}.stale`;
        try {
          renameSync(file, aside);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
          throw error;
        }
        try {
          if (readFileSync(aside, "utf8") !== claim) linkSync(aside, file);
        } finally {
          rmSync(aside, { force: true });
        }
      }
    }
  } finally {
    rmSync(draft, { force: true });
  }
}

/** A claim and when it was last touched; undefined if there is none. */
function read(file: string): { claim: string; touchedMs: number } | undefined {
  try {
    return { touchedMs: statSync(file).mtimeMs, claim: readFileSync(file, "utf8") };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Makes `dir` (if missing) its owner's alone, as Postgres does its data directory: PGlite writes its
 * files readable and writable by all, and whoever can reach them can rewrite the tokens and the
 * commands agents run. One this process may not change (a volume another user owns, as a
 * container's often is) or whose filesystem keeps no modes is used as it is, with a warning.
 */
function makePrivate(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const open = () => statSync(dir).mode & 0o077;
  if (open() === 0) return;
  try {
    chmodSync(dir, 0o700);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EPERM") throw error;
  }
  if (open() === 0) return;
  process.emitWarning(
    `the data directory ${dir} is open to other users (mode ${(statSync(dir).mode & 0o777).toString(8)}) and could not be made private: ` +
      "whoever can reach its files can change the tokens and the commands agents run",
    { code: "JOBFLEET_DATA_DIR_OPEN" },
  );
}

/**
 * Whether the process a claim names still runs: the same pid, started at the same time where that
 * can be told; made in another pid namespace, whether it was touched lately. (A claim of an earlier
 * version names no namespace: its pid is judged here.)
 */
function holds(claim: string, touchedMs: number): boolean {
  const [pidText, started = "", scope] = claim.split(" ");
  if (scope !== undefined && scope !== SCOPE) return Date.now() - touchedMs < STALE_MS;
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  // A pid taken again by another process (after a reboot, a container's restart) is not the holder.
  const now = startOf(pid);
  return started === "" || now === undefined || now === started;
}

/** When a process started, in clock ticks since boot (Linux); undefined where that cannot be read. */
function startOf(pid: number): string | undefined {
  try {
    // The fields after the command's closing parenthesis; the start time is the 22nd field of all.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/**
 * Makes a database in `dir` (claimed) with `create` unless it holds one: built in a directory inside
 * it, then moved up. An earlier attempt's leftovers are cleared: its building directories, and the
 * entries a database has, where a move was cut short. A directory that holds other files and no
 * database is refused, as initdb refuses it: its `base` or `global` is not a database's to replace.
 */
export async function initialiseDataDir(dir: string, create: (dir: string) => Promise<void>): Promise<void> {
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(dir)) if (name.startsWith(BUILDING)) rmSync(join(dir, name), { recursive: true, force: true });
  const moving = join(dir, MOVING);
  if (existsSync(join(dir, "PG_VERSION"))) return rmSync(moving, { force: true });
  const others = readdirSync(dir).filter((name) => !expectedBeforeDatabase(name));
  if (others.length > 0 && !existsSync(moving)) {
    const listed = others.slice(0, 3).join(", ") + (others.length > 3 ? ", …" : "");
    throw Object.assign(new Error(`it holds no database and is not empty (${listed}): give an empty or new directory`), { code: "JOBFLEET_DATA_DIR_NOT_EMPTY" });
  }
  const building = join(dir, `${BUILDING}${randomUUID()}`);
  try {
    await create(building);
    writeFileSync(moving, "");
    const entries = readdirSync(building).sort((a, b) => Number(a === "PG_VERSION") - Number(b === "PG_VERSION"));
    for (const name of entries) {
      rmSync(join(dir, name), { recursive: true, force: true });
      renameSync(join(building, name), join(dir, name));
    }
    rmSync(moving);
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
}
