// Cancelling: a pending work order is cancelled at once; a claimed or running one has its job
// marked, and the agent holding it is asked to stop it (it confirms with `cancelled`).
import { workOrderMachine } from "../../protocol/states.ts";
import type { Database, Queryable } from "../db/database.ts";
import { ACTIVE_JOB_STATES } from "./active-jobs.ts";

if (!workOrderMachine.can("pending", "cancelled")) throw new Error("cancel assumes pending -> cancelled");

const CANCEL_PENDING = `
WITH wo AS (
  UPDATE work_orders SET state = 'cancelled', updated_at = now()
  WHERE id = $1 AND state = 'pending'
  RETURNING id, state
), event AS (
  INSERT INTO work_order_events (work_order_id, from_state, to_state, reason)
  SELECT id, 'pending', 'cancelled', $2 FROM wo
)
SELECT id FROM wo`;

const MARK_JOB = `
UPDATE jobs j SET cancel_reason = coalesce(j.cancel_reason, $2)
FROM work_orders wo
WHERE wo.id = $1 AND j.id = wo.latest_job_id AND j.state IN (${ACTIVE_JOB_STATES})
RETURNING j.id::text AS "jobId", j.agent_id::text AS "agentId", j.cancel_reason AS reason`;

export type CancelOutcome =
  | { kind: "cancelled" }
  | { kind: "requested"; jobId: string; agentId: string; reason: string }
  | { kind: "not_active" };

const LATEST = `SELECT latest_job_id::text AS latest FROM work_orders WHERE id = $1`;
const LOCK_UNCLAIMED = `SELECT 1 FROM work_orders WHERE id = $1 AND latest_job_id IS NULL FOR UPDATE`;
// In the order a job's ending locks them (job, then work order), so the two cannot deadlock.
const LOCK_WITH_JOB = `
SELECT 1 FROM jobs j JOIN work_orders wo ON wo.id = j.work_order_id
WHERE j.id = $2 AND wo.id = $1 AND wo.latest_job_id = j.id
FOR UPDATE OF j, wo`;

/** Locks the work order and its latest job, if any; false when it is gone. */
async function lock(tx: Queryable, id: string): Promise<boolean> {
  for (;;) {
    const [row] = await tx.query<{ latest: string | null }>(LATEST, [id]);
    if (!row) return false;
    const locked = row.latest === null ? await tx.query(LOCK_UNCLAIMED, [id]) : await tx.query(LOCK_WITH_JOB, [id, row.latest]);
    // Empty only when a claim made a newer job meanwhile.
    if (locked.length > 0) return true;
  }
}

/**
 * Locks first, so the work order cannot move between the two looks: an ending that would retry
 * it waits, and then finds the cancel asked for.
 */
export function workOrderCancel(db: Database, id: string, reason: string): Promise<CancelOutcome> {
  return db.transaction(async (tx) => {
    if (!(await lock(tx, id))) return { kind: "not_active" };
    const [cancelled] = await tx.query(CANCEL_PENDING, [id, reason]);
    if (cancelled) return { kind: "cancelled" };
    const [job] = await tx.query<{ jobId: string; agentId: string; reason: string }>(MARK_JOB, [id, reason]);
    return job ? { kind: "requested", ...job } : { kind: "not_active" };
  });
}
