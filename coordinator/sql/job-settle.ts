// Ends a job and moves its work order on, by the retry policy of protocol/retry.ts: the one place a
// job's ending becomes its work order's state, for endings reported by agents and found by the reaper.
import { type Outcome, type WorkOrderState, workOrderMachine } from "../../protocol/states.ts";
import { type RetryableEnding, settle } from "../../protocol/retry.ts";
import type { Queryable } from "../db/database.ts";

/** A locked job with what its work order needs to decide. */
export type Settling = {
  job_id: string;
  work_order_id: string;
  order_state: WorkOrderState;
  /** Whether this job is its work order's latest (only the latest moves the work order). */
  latest: boolean;
  attempts: number;
  max_attempts: number;
  retry_on: RetryableEnding[];
  retry_backoff_seconds: number;
  cancel_reason: string | null;
};

/** The columns of `Settling`, for a query joining jobs `j` and work orders `wo`. */
export const SETTLING_COLUMNS = `j.id::text AS job_id, j.work_order_id::text AS work_order_id, wo.state AS order_state,
  wo.latest_job_id = j.id AS latest, wo.attempts, wo.max_attempts, wo.retry_on, wo.retry_backoff_seconds, j.cancel_reason`;

export type JobEnd = { outcome: Outcome; exitCode: number | null; error: string | null; infrastructure: boolean; seq: number | null };

const SETTLE = `
WITH j AS (
  UPDATE jobs SET state = $2::text::job_state, seq = coalesce($3, seq), finished_at = now(),
    exit_code = $4, error = $5, infrastructure = $6
  WHERE id = $1 RETURNING id, work_order_id
), wo AS (
  UPDATE work_orders w SET state = $7::text::work_order_state, updated_at = now(), run_after = now() + make_interval(secs => $8)
  FROM j WHERE $9 AND w.id = j.work_order_id
), event AS (
  INSERT INTO work_order_events (work_order_id, job_id, from_state, to_state, reason)
  SELECT j.work_order_id, j.id, $10::text::work_order_state, $7::text::work_order_state, $11 FROM j WHERE $9
)
SELECT 1`;

/** Settles a job that the caller has locked (with its work order); returns the work order's next state. */
export async function jobSettle(tx: Queryable, job: Settling, end: JobEnd): Promise<WorkOrderState> {
  const next = settle(end.outcome, end.infrastructure, {
    attempts: job.attempts,
    maxAttempts: job.max_attempts,
    retryOn: job.retry_on,
    backoffSeconds: job.retry_backoff_seconds,
    cancelRequested: job.cancel_reason !== null,
  });
  const moves = job.latest && workOrderMachine.can(job.order_state, next.state);
  const delay = next.state === "pending" ? next.delaySeconds : 0;
  await tx.query(SETTLE, [
    job.job_id,
    end.outcome,
    end.seq,
    end.exitCode,
    end.error,
    end.infrastructure,
    next.state,
    delay,
    moves,
    job.order_state,
    next.reason,
  ]);
  return moves ? next.state : job.order_state;
}
