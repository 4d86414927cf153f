// Cancelling: a pending work order is cancelled at once; a claimed or running one has its job
// marked, and the agent holding it is asked to stop it (it confirms with `cancelled`).
import { workOrderMachine } from "../../protocol/states.ts";
import type { Queryable } from "../db/database.ts";
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

export async function workOrderCancel(db: Queryable, id: string, reason: string): Promise<CancelOutcome> {
  const [cancelled] = await db.query(CANCEL_PENDING, [id, reason]);
  if (cancelled) return { kind: "cancelled" };
  const [job] = await db.query<{ jobId: string; agentId: string; reason: string }>(MARK_JOB, [id, reason]);
  return job ? { kind: "requested", ...job } : { kind: "not_active" };
}
