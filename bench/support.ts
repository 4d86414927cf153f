// Shared pieces of the benchmark: throwaway Postgres databases, commit counters, child processes
// with an IPC channel, clocks and percentiles. Nothing here measures anything by itself.
import { randomBytes } from "node:crypto";
import postgres from "postgres";

/** A server where the bench may create and drop databases (never touching this one's own data). */
export const ADMIN_URL = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Milliseconds on a clock that agrees across processes on one machine (sub-millisecond resolution). */
export const now = () => performance.timeOrigin + performance.now();

const created = new Set<string>();

/** `fn` on a connection of its own to the admin database, closed after. */
async function withAdmin<T>(fn: (admin: postgres.Sql) => Promise<T>): Promise<T> {
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

/** A fresh, empty database on the admin server; returns its URL. Dropped by `dropDatabase` or `dropAll`. */
export async function createDatabase(prefix: string): Promise<string> {
  const name = `jobfleet_bench_${prefix}_${randomBytes(4).toString("hex")}`;
  await withAdmin((admin) => admin.unsafe(`CREATE DATABASE ${name}`));
  created.add(name);
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function dropDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  await withAdmin((admin) => admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  created.delete(name);
}

/** Drops every database this process created and has not dropped yet (on the way out). */
export async function dropAll(): Promise<void> {
  for (const name of [...created]) {
    const url = new URL(ADMIN_URL);
    url.pathname = `/${name}`;
    await dropDatabase(url.toString()).catch(() => {});
  }
}

/**
 * `pg_stat_database.xact_commit` of a database, read from the admin database (so the reads are not
 * counted). Backends publish their counts at most once a second, and at exit: call this once every
 * client of the database is gone, and it waits until two reads agree.
 */
export async function commits(url: string): Promise<number> {
  const name = new URL(url).pathname.slice(1);
  return withAdmin(async (admin) => {
    let last = -1;
    for (let i = 0; i < 50; i++) {
      const [row] = await admin<{ n: string }[]>`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = ${name}`;
      const n = Number(row?.n ?? 0);
      if (n === last) return n;
      last = n;
      await sleep(150);
    }
    return last;
  });
}

/** Bytes of WAL the server has written so far (the whole cluster: run nothing else meanwhile). */
export async function walBytes(): Promise<number> {
  return withAdmin(async (admin) => {
    const [row] = await admin<{ n: string }[]>`SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS n`;
    return Number(row!.n);
  });
}

/** The server's version and the settings that bear on the figures, for the table's notes. */
export async function serverSettings(): Promise<string> {
  return withAdmin(async (admin) => {
    const rows = await admin<{ name: string; setting: string }[]>`
      SELECT name, setting FROM pg_settings
      WHERE name IN ('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', 'autovacuum', 'max_connections', 'max_wal_size')
      ORDER BY name`;
    return rows.map((r) => `${r.name} ${r.setting}`).join(", ");
  });
}

/**
 * Writes out every dirty page now, before a measured phase: a checkpoint that fell inside one
 * party's phase would charge it alone with the writes and full-page images of every run before.
 */
export async function checkpoint(): Promise<void> {
  await withAdmin((admin) => admin`CHECKPOINT`);
}

/** Polls `check` every `intervalMs` until it answers true; rejects after `timeoutMs`. */
export async function waitUntil(check: () => Promise<boolean> | boolean, intervalMs: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

export type Message = { type: string; [key: string]: unknown };

/** In a child: the JSON config passed by `Child`, and a way to answer requests. */
export function childConfig<T>(): T {
  return JSON.parse(process.argv[2] ?? "{}") as T;
}

export function send(message: Message): void {
  process.send?.(message);
}

/** In a child: handles each request `type` with `handler`, answering `reply {id, value | error}`. */
export function serve(handlers: Record<string, (message: Message) => unknown>): void {
  process.on("message", (message: Message) => {
    const handler = handlers[message.type];
    if (!handler) return;
    void (async () => {
      try {
        const value = await handler(message);
        if (message.id !== undefined) send({ type: "reply", id: message.id, value });
      } catch (error) {
        if (message.id !== undefined) send({ type: "reply", id: message.id, error: error instanceof Error ? error.message : String(error) });
      }
    })();
  });
  // The parent gone means the bench is over.
  process.on("disconnect", () => process.exit(0));
}

/** CPU seconds (user + system) of this process so far. */
export function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}
