// The reaper's statements. Each takes a batch of rows no other coordinator holds (SKIP LOCKED),
// so any number of coordinators may reap at once without doing anything twice.
import { workOrderMachine } from "../../protocol/states.ts";
import type { Enqueued } from "../bus.ts";
import type { Database } from "../db/database.ts";
import { ACTIVE_JOB_STATES } from "./active-jobs.ts";
import { jobSettle, SETTLING_COLUMNS, type Settling } from "./job-settle.ts";
import { JobWrites } from "./job-writes.ts";
import { ENQUEUED_COLUMNS } from "./views.ts";

const BATCH = 100;
if (!workOrderMachine.can("pending", "timed_out")) throw new Error("queue timeouts assume pending -> timed_out");

export type Reaped = { workOrderId: string; jobId: string; agentId: string };

/** What a reaping pass ended, and the work orders it put straight back in the queue. */
export type Reaping = { reaped: Reaped[]; requeued: Enqueued[] };

// The agent's row is locked too: a renewal in flight (the agent reconnecting to another
// coordinator, whose welcome lists these jobs as its own) holds it, and its jobs are left alone.
const LOST = `
SELECT ${SETTLING_COLUMNS}, j.agent_id::text AS agent_id
FROM jobs j JOIN work_orders wo ON wo.id = j.work_order_id JOIN agents a ON a.id = j.agent_id
WHERE j.state IN (${ACTIVE_JOB_STATES}) AND a.lease_expires_at < now()
ORDER BY j.id LIMIT ${BATCH}
FOR UPDATE OF j, wo SKIP LOCKED
FOR SHARE OF a SKIP LOCKED`;

const OVERDUE = `
SELECT ${SETTLING_COLUMNS}, j.agent_id::text AS agent_id
FROM jobs j JOIN work_orders wo ON wo.id = j.work_order_id
WHERE j.state IN ('starting', 'running') AND wo.timeout_seconds IS NOT NULL
  AND j.started_at + make_interval(secs => wo.timeout_seconds + $1) <= now()
ORDER BY j.id LIMIT ${BATCH}
FOR UPDATE OF j, wo SKIP LOCKED`;

async function settleAll(db: Database, query: string, params: unknown[], outcome: "lost" | "timed_out", error: string): Promise<Reaping> {
  return db.transaction(async (tx) => {
    const rows = await tx.query<Settling & { agent_id: string }>(query, params);
    const writes = new JobWrites();
    for (const row of rows) jobSettle(writes, row, { outcome, exitCode: null, error, infrastructure: false, seq: null });
    const requeued = await writes.flush(tx);
    return { reaped: rows.map((r): Reaped => ({ workOrderId: r.work_order_id, jobId: r.job_id, agentId: r.agent_id })), requeued };
  });
}

/**
 * Jobs of agents whose lease ran out: those begun are lost, and their work orders retried or ended
 * by their policy; those only held are returned, and their work orders go back in the queue.
 */
export function reapLost(db: Database): Promise<Reaping> {
  return settleAll(db, LOST, [], "lost", "the agent was lost: it was away longer than its lease");
}

/**
 * Jobs begun (starting or running) past their run timeout by more than `graceSeconds`, counted from
 * `started_at` (never before the agent's own count): the agent should have stopped them itself, so
 * it is not answering; they end timed_out and the agent is told to cancel.
 */
export function reapOverdue(db: Database, graceSeconds: number): Promise<Reaping> {
  return settleAll(db, OVERDUE, [graceSeconds], "timed_out", "run timeout: the agent did not end the job in time");
}

const QUEUE_TIMEOUT = `
WITH due AS (
  SELECT id FROM work_orders
  WHERE state = 'pending' AND queue_timeout_seconds IS NOT NULL
    AND greatest(updated_at, run_after) + make_interval(secs => queue_timeout_seconds) <= now()
  ORDER BY id LIMIT ${BATCH}
  FOR UPDATE SKIP LOCKED
), ended AS (
  UPDATE work_orders wo SET state = 'timed_out', updated_at = now() FROM due WHERE wo.id = due.id RETURNING wo.id
), event AS (
  INSERT INTO work_order_events (work_order_id, from_state, to_state, reason)
  SELECT id, 'pending', 'timed_out', 'queue timeout: no agent claimed it in time' FROM ended
)
SELECT id::text AS id FROM ended`;

/** Pending work orders that waited longer than their queue timeout end timed_out. */
export async function reapQueueTimeouts(db: Database): Promise<string[]> {
  return (await db.query<{ id: string }>(QUEUE_TIMEOUT)).map((r) => r.id);
}

/**
 * How far before the last look the next one reaches back: a retry's `run_after` is set from its
 * settling transaction's start, which may commit after a look that began later.
 */
const DUE_OVERLAP = "5 seconds";

const DUE = `
SELECT ${ENQUEUED_COLUMNS} FROM work_orders
WHERE state = 'pending' AND attempts > 0
  AND run_after >= $1::timestamptz - interval '${DUE_OVERLAP}' AND run_after <= $2::timestamptz`;

/**
 * Pending work orders that became claimable in [since, until], reaching back `DUE_OVERLAP` before
 * `since`: retries whose backoff is over. One is woken more than once, which costs a claim at most;
 * a gap could leave it waiting for an unrelated wake-up while agents sit idle.
 */
export async function dueRetries(db: Database, since: string, until: string): Promise<Enqueued[]> {
  return db.query<Enqueued>(DUE, [since, until]);
}

/** The database's clock, as text so that no precision is lost on the way back in. */
export async function databaseNow(db: Database): Promise<string> {
  const [row] = await db.query<{ now: string }>(`SELECT now()::text AS now`);
  return row!.now;
}
