// Upgrading a database that already holds jobs: the migration that adds the `starting` and
// `returned` job states uses them in the same transaction, which Postgres refuses for values added
// to an existing type. The database is first migrated only as far as the release before it.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import { migrate as migratePostgres } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import { afterAll, expect, it } from "vitest";
import { type Database, openDatabase, type Queryable } from "../../coordinator/db/database.ts";
import { migrationsFolder } from "../../coordinator/db/migrations.ts";
import { createPostgresDatabase, dropPostgresDatabase, forEachDatabase, type Kind } from "../support/databases.ts";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import { order } from "./fixtures.ts";

const BEFORE = "0003_sweep_indexes_unchecked_events";
const temp = mkdtempSync(join(tmpdir(), "jobfleet-migrations-"));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

/** The migrations folder as it was up to `BEFORE`. */
function olderMigrations(): string {
  const folder = join(temp, "migrations");
  cpSync(migrationsFolder, folder, { recursive: true });
  const journalPath = join(folder, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(journalPath, "utf8")) as { entries: { tag: string }[] };
  const last = journal.entries.findIndex((e) => e.tag === BEFORE);
  expect(last).toBeGreaterThan(0);
  writeFileSync(journalPath, JSON.stringify({ ...journal, entries: journal.entries.slice(0, last + 1) }));
  return folder;
}

/** Migrates a new database of `kind` to `BEFORE`, lets `fill` write to it, then opens it as the coordinator does. */
async function upgraded(kind: Kind, fill: (db: Queryable) => Promise<void>): Promise<Database> {
  const folder = olderMigrations();
  if (kind === "pglite") {
    const dataDir = join(temp, `pglite-${Date.now()}`);
    const client = new PGlite(dataDir);
    await migratePglite(drizzlePglite({ client }), { migrationsFolder: folder });
    await fill({ query: async (text, params) => (await client.query(text, params)).rows as never });
    await client.close();
    return openDatabase({ kind, dataDir });
  }
  const url = await createPostgresDatabase();
  try {
    const client = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      await migratePostgres(drizzlePostgres({ client }), { migrationsFolder: folder });
      await fill({ query: (text, params = []) => client.unsafe(text, params as never[]) as never });
    } finally {
      await client.end();
    }
    const db = await openDatabase({ kind, url: url.toString() });
    return { ...db, close: async () => (await db.close(), await dropPostgresDatabase(url)) } as Database;
  } catch (error) {
    await dropPostgresDatabase(url);
    throw error;
  }
}

forEachDatabase("upgrading to the starting and returned job states, and to jobs that carry their agent's name", (kind) => {
  it("keeps every job's state, names each job's agent, and lets a returned job share its attempt number with the next", async () => {
    let orderId = "";
    const db = await upgraded(kind, async (old) => {
      // Written as that release would: the coordinator's own statements may name later columns.
      const [agent] = await old.query<{ id: string }>(
        `INSERT INTO agents (name, labels, capacity, mode, version) VALUES ('old-agent', '{"os": "linux"}', 1, 'queue', 'old') RETURNING id::text AS id`,
      );
      orderId = (await workOrderInsertMany(old, [order({ selector: "os=linux", maxAttempts: 5 })])).ids[0]!;
      for (const [attempt, state] of [[1, "lost"], [2, "failed"], [3, "running"]] as const) {
        await old.query(`INSERT INTO jobs (work_order_id, attempt, agent_id, state) VALUES ($1, $2, $3, $4)`, [orderId, attempt, agent!.id, state]);
      }
    });
    try {
      const states = await db.query<{ attempt: number; state: string; agent_name: string }>(
        `SELECT attempt, state::text AS state, agent_name FROM jobs ORDER BY attempt`,
      );
      expect(states).toEqual([
        { attempt: 1, state: "lost", agent_name: "old-agent" },
        { attempt: 2, state: "failed", agent_name: "old-agent" },
        { attempt: 3, state: "running", agent_name: "old-agent" },
      ]);
      const [agent] = await db.query<{ id: string }>(`SELECT id::text AS id FROM agents`);
      const job = (attempt: number, state: string) =>
        db.query(`INSERT INTO jobs (work_order_id, attempt, agent_id, agent_name, state) VALUES ($1, $2, $3, 'old-agent', $4)`, [
          orderId,
          attempt,
          agent!.id,
          state,
        ]);
      await job(4, "returned");
      await job(4, "starting");
      await expect(job(4, "claimed")).rejects.toThrow(/jobs_work_order_attempt/);
    } finally {
      await db.close();
    }
  });
});

forEachDatabase("a database a newer version migrated", (kind) => {
  it("is refused with the dates of both versions' newest migrations, not served on a schema this one cannot use", async () => {
    // Found by a review: an older coordinator served it, and every enqueue was a 500.
    const future = Date.UTC(2100, 0, 1);
    const record = `INSERT INTO drizzle.__drizzle_migrations (hash, created_at) VALUES ('from-a-newer-version', ${future})`;
    const refused = { code: "JOBFLEET_DATABASE_NEWER", message: expect.stringMatching(/^a newer jobfleet migrated it \(its newest migration is of 2100-01-01, this version's of \d{4}-\d\d-\d\d\)/) };
    if (kind === "pglite") {
      const dataDir = join(temp, `newer-${Date.now()}`);
      await (await openDatabase({ kind, dataDir })).close();
      const client = new PGlite(dataDir);
      await client.exec(record);
      await client.close();
      await expect(openDatabase({ kind, dataDir })).rejects.toMatchObject(refused);
      return;
    }
    const url = await createPostgresDatabase();
    try {
      await (await openDatabase({ kind, url: url.toString() })).close();
      const client = postgres(url.toString(), { max: 1, onnotice: () => {} });
      await client.unsafe(record);
      await client.end();
      await expect(openDatabase({ kind, url: url.toString() })).rejects.toMatchObject(refused);
    } finally {
      await dropPostgresDatabase(url);
    }
  });
});
