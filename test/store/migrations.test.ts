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
import { createPostgresDatabase, describePostgres, dropPostgresDatabase, forEachDatabase, type Kind } from "../support/databases.ts";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import { agentConnect, agentsSeen } from "../../coordinator/sql/agent-session.ts";
import { order } from "./fixtures.ts";

const BEFORE = "0003_sweep_indexes_unchecked_events";
const SESSION_SEEN = "0011_agent_session_seen";
const temp = mkdtempSync(join(tmpdir(), "jobfleet-migrations-"));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

/** The migrations folder as it was up to `before`. */
function olderMigrations(before: string): string {
  const folder = join(temp, `migrations-${before}`);
  cpSync(migrationsFolder, folder, { recursive: true });
  const journalPath = join(folder, "meta", "_journal.json");
  const journal = JSON.parse(readFileSync(journalPath, "utf8")) as { entries: { tag: string }[] };
  const last = journal.entries.findIndex((e) => e.tag === before);
  expect(last).toBeGreaterThan(0);
  writeFileSync(journalPath, JSON.stringify({ ...journal, entries: journal.entries.slice(0, last + 1) }));
  return folder;
}

/** Migrates a new database of `kind` to `before`, lets `fill` write to it, then opens it as the coordinator does. */
async function upgraded(kind: Kind, fill: (db: Queryable) => Promise<void>, before = BEFORE): Promise<Database> {
  const folder = olderMigrations(before);
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

/** Its heartbeat 4 s, as the other replica's in the tests below. */
const RETAKE_0011 = `(a.session_id IS DISTINCT FROM x.session_id
  AND coalesce(a.session_seen_at, a.session_since, '-infinity') < now() - make_interval(secs => 6))`;

/** A replica still on migration 0011's release registers and renews its agents so (its statements, on the columns that changed). */
const REPLICA_0011 = {
  connect: `INSERT INTO agents (name, labels, capacity, prefetch, mode, version, session_id, session_since, lease_expires_at, token_id)
    VALUES ($1, '{}'::jsonb, 1, 0, 'queue', 'old', $2, now(), now() + make_interval(secs => 30), NULL)
    ON CONFLICT (name) DO UPDATE SET session_id = excluded.session_id, session_since = now(), session_seen_at = NULL, last_seen_at = now(),
      lease_expires_at = excluded.lease_expires_at
    RETURNING id::text AS id`,
  seen: `WITH input AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS x(id, session_id))
    UPDATE agents a SET last_seen_at = now(), lease_expires_at = now() + make_interval(secs => 30),
      session_id = CASE WHEN ${RETAKE_0011} THEN x.session_id ELSE a.session_id END,
      session_since = CASE WHEN ${RETAKE_0011} THEN now() ELSE a.session_since END,
      session_seen_at = CASE WHEN ${RETAKE_0011} OR a.session_id = x.session_id THEN now() ELSE a.session_seen_at END
    FROM input x WHERE a.id = x.id
    RETURNING a.id::text AS id, a.session_id IS DISTINCT FROM x.session_id AND a.session_seen_at IS NOT NULL AS replaced`,
  disconnect: `UPDATE agents SET session_id = NULL, session_since = NULL, session_seen_at = NULL, last_seen_at = now(),
    lease_expires_at = now() + make_interval(secs => 30) WHERE id = $1 AND session_id = $2`,
};

describePostgres("a rolling upgrade from migration 0011's release", () => {
  const hello = { name: "both", labels: {}, capacity: 1, mode: "queue" as const, version: "new" };

  it("leaves the columns a replica still on it writes, so its hellos and renewals go on", async () => {
    const db = await upgraded("postgres", async () => {}, SESSION_SEEN);
    try {
      const [{ id }] = (await db.query<{ id: string }>(REPLICA_0011.connect, ["both", "old-1"])) as [{ id: string }];
      expect(await db.query(REPLICA_0011.seen, [[id], ["old-1"]])).toEqual([{ id, replaced: false }]);
      await agentConnect(db, hello, "new-1", 30, 6);
      expect(await db.query(REPLICA_0011.seen, [[id], ["old-1"]])).toEqual([{ id, replaced: false }]);
    } finally {
      await db.close();
    }
  });

  it("keeps the name with a newer connection on a replica still on it, which writes no renewal due, while that replica renews it", async () => {
    const db = await upgraded("postgres", async () => {}, SESSION_SEEN);
    try {
      // The older connection, here, promised its next renewal within a second; the newer one then
      // registered on the old replica, which leaves that promise in the row.
      const id = (await agentConnect(db, hello, "new-older", 30, 1))!.id;
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await db.query(REPLICA_0011.connect, ["both", "old-newer"]);
      await db.query(REPLICA_0011.seen, [[id], ["old-newer"]]);
      const renewed = await agentsSeen(db, [{ agentId: id, sessionId: "new-older" }], 30, 1);
      expect(renewed.replaced).toEqual(new Set([id]));
      expect(await db.query(`SELECT session_id FROM agents`)).toEqual([{ session_id: "old-newer" }]);
    } finally {
      await db.close();
    }
  });

  it("has a live connection take back at once a name that a replica still on it let go of, leaving an earlier session's renewal due", async () => {
    const db = await upgraded("postgres", async () => {}, SESSION_SEEN);
    try {
      const id = (await agentConnect(db, hello, "new-live", 30, 6))!.id;
      await agentsSeen(db, [{ agentId: id, sessionId: "new-live" }], 30, 6);
      // A hello on the old replica whose socket had closed lands now, and is let go of at once.
      await db.query(REPLICA_0011.connect, ["both", "old-gone"]);
      await db.query(REPLICA_0011.disconnect, [id, "old-gone"]);
      await agentsSeen(db, [{ agentId: id, sessionId: "new-live" }], 30, 6);
      expect(await db.query(`SELECT session_id FROM agents`)).toEqual([{ session_id: "new-live" }]);
    } finally {
      await db.close();
    }
  });

  it("gives the column back to a database where the first 0012, which dropped it, ran", async () => {
    const db = await upgraded("postgres", async (old) => void (await old.query(`ALTER TABLE agents DROP COLUMN session_since`)), SESSION_SEEN);
    try {
      expect((await agentConnect(db, hello, "new-1", 30, 6))?.id).toMatch(/^\d+$/);
      expect(await db.query(`SELECT session_since IS NOT NULL AS since FROM agents`)).toEqual([{ since: true }]);
    } finally {
      await db.close();
    }
  });
});
