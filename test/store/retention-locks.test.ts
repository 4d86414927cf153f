// Retention against a cancel, or a late job message, on the work order it is deleting at that
// moment. Those lock a job before its work order; a purge that waited for the job while holding
// the work order deadlocked with them, and Postgres aborted the other side (a cancel answered 500,
// a batch of job messages failed whole). Here a purge pauses after its first locking statement
// while the other side comes in, and neither may fail. Postgres only: PGlite has one connection.
import { expect, it } from "vitest";
import type { Database, Queryable } from "../../coordinator/db/database.ts";
import { jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import { purgeExpired } from "../../coordinator/sql/retention.ts";
import { workOrderCancel } from "../../coordinator/sql/work-order-cancel.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { describePostgres } from "../support/databases.ts";
import { connectAgent, order, useDatabase, workOrderInsert } from "./fixtures.ts";

describePostgres("retention against a cancel or a job message on the same work order", () => {
  const db = useDatabase("postgres", 4);

  /** A work order that succeeded 40 days ago, with its job. */
  async function endedLongAgo(name: string) {
    const agent = await connectAgent(db(), name, {}, "work-order");
    const { row } = await workOrderInsert(db(), order({ agent: name }));
    const [job] = await workOrderClaim(db(), agent, 1);
    await db().transaction((tx) =>
      jobApplyIn(tx, [
        { agentId: agent.agentId, message: { type: "job.started", jobId: job!.jobId, seq: 1 } },
        { agentId: agent.agentId, message: { type: "job.finished", jobId: job!.jobId, seq: 2, outcome: "succeeded", exitCode: 0 } },
      ]),
    );
    await db().query(`UPDATE work_orders SET updated_at = now() - interval '40 days' WHERE id = $1`, [row.id]);
    return { id: row.id, jobId: job!.jobId, agentId: agent.agentId };
  }

  /** The database, but a purge's transaction pauses after its first statement that locks rows, until released. */
  function pausingPurge() {
    let locked!: () => void;
    let release!: () => void;
    const paused = { locked: new Promise<void>((resolve) => (locked = resolve)), released: new Promise<void>((resolve) => (release = resolve)) };
    let first = true;
    const database = {
      ...db(),
      transaction: (fn: (tx: Queryable) => Promise<unknown>) =>
        db().transaction((tx) =>
          fn({
            query: async (text: string, params?: unknown[]) => {
              const rows = await tx.query(text, params);
              if (first && text.includes("FOR UPDATE")) {
                first = false;
                locked();
                await paused.released;
              }
              return rows;
            },
          } as Queryable),
        ),
    } as Database;
    return { database, locked: paused.locked, release };
  }

  /** Once some session of this database waits for a lock. */
  async function someoneWaits(): Promise<void> {
    await expect
      .poll(async () => (await db().query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`))[0]!.n, { timeout: 5_000 })
      .toBeGreaterThan(0);
  }

  it("a cancel of a work order a purge is deleting answers not_active; the order goes at the next pass", async () => {
    const { id } = await endedLongAgo("purge-cancel");
    const purge = pausingPurge();
    const purging = purgeExpired(purge.database, 30);
    await purge.locked;
    const cancelling = workOrderCancel(db(), id, "late");
    await someoneWaits();
    purge.release();
    expect(await cancelling).toEqual({ kind: "not_active" });
    const [first, second] = [await purging, await purgeExpired(db(), 30)];
    expect(first.workOrders + second.workOrders).toBe(1);
    expect(await db().query(`SELECT 1 FROM work_orders WHERE id = $1`, [id])).toEqual([]);
  });

  it("a late job message about a job a purge is deleting fails neither its batch nor the purge", async () => {
    const { id, jobId, agentId } = await endedLongAgo("purge-apply");
    const purge = pausingPurge();
    const purging = purgeExpired(purge.database, 30);
    await purge.locked;
    const applying = db().transaction((tx) => jobApplyIn(tx, [{ agentId, message: { type: "job.log", jobId, seq: 3, data: "late\n" } }]));
    await someoneWaits();
    purge.release();
    await expect(applying).resolves.toBeDefined();
    const [first, second] = [await purging, await purgeExpired(db(), 30)];
    expect(first.workOrders + second.workOrders).toBe(1);
    expect(await db().query(`SELECT 1 FROM work_orders WHERE id = $1`, [id])).toEqual([]);
  });
});
