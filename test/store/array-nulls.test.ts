// The array parameters (coordinator/sql/array-literal.ts) write a missing value as NULL, which
// Postgres reads as a null only while `array_nulls` is on: a database whose default turns it off
// must still take enqueues and job messages, with their nulls null.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { afterAll, expect, it } from "vitest";
import { type Database, openDatabase } from "../../coordinator/db/database.ts";
import { jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import { createPostgresDatabase, dropPostgresDatabase, forEachDatabase, type Kind } from "../support/databases.ts";
import { connectAgent, order } from "./fixtures.ts";

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A database of `kind` whose sessions start with array_nulls off. */
async function arrayNullsOff(kind: Kind): Promise<Database> {
  if (kind === "pglite") {
    const dataDir = await mkdtemp(join(tmpdir(), "jobfleet-array-nulls-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await openDatabase({ kind, dataDir });
    // PGlite applies no per-database settings at its start; the server's own configuration it reads.
    await first.query("ALTER SYSTEM SET array_nulls = off");
    await first.close();
    const db = await openDatabase({ kind, dataDir });
    cleanups.push(() => db.close());
    return db;
  }
  const url = await createPostgresDatabase();
  const admin = postgres(url.toString(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`ALTER DATABASE ${url.pathname.slice(1)} SET array_nulls = off`);
  await admin.end();
  const db = await openDatabase({ kind, url: url.toString() });
  cleanups.push(async () => (await db.close(), await dropPostgresDatabase(url)));
  return db;
}

forEachDatabase("a database whose sessions start with array_nulls off", (kind) => {
  it("takes enqueues and job messages, their nulls null", async () => {
    const db = await arrayNullsOff(kind);
    const [setting] = await db.query<{ array_nulls: string }>("SHOW array_nulls");
    expect(setting!.array_nulls).toBe("on");
    const agent = await connectAgent(db, "nulls-agent", {}, "work-order");
    const { ids } = await workOrderInsertMany(db, [order({ agent: "nulls-agent" }), order()]);
    const [row] = await db.query<{ timeout_seconds: number | null; idempotency_key: string | null; target_agent: string | null }>(
      "SELECT timeout_seconds, idempotency_key, target_agent FROM work_orders WHERE id = $1",
      [ids[1]],
    );
    expect(row).toEqual({ timeout_seconds: null, idempotency_key: null, target_agent: null });
    const [assignment] = await workOrderClaim(db, agent, 1);
    expect(assignment!.workOrderId).toBe(ids[0]);
    const jobId = assignment!.jobId;
    const applied = await db.transaction((tx) =>
      jobApplyIn(tx, [
        { agentId: agent.agentId, message: { type: "job.started", jobId, seq: 1 } },
        { agentId: agent.agentId, message: { type: "job.finished", jobId, seq: 2, outcome: "succeeded", exitCode: null } },
      ]),
    );
    expect(applied.map((a) => a.kind)).toEqual(["applied", "applied"]);
    const [job] = await db.query<{ state: string; exit_code: number | null; error: string | null }>(
      "SELECT state::text AS state, exit_code, error FROM jobs WHERE id = $1",
      [jobId],
    );
    expect(job).toEqual({ state: "succeeded", exit_code: null, error: null });
  });
});
