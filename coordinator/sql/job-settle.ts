// Ends a job and moves its work order on, by the retry policy of protocol/retry.ts: the one place a
// job's ending becomes its work order's state, for endings reported by agents and found by the reaper.
// A job lost before it began (its agent never said `starting`) is returned instead: nothing ran.
// A begun job its agent disowned is held back while it may still run where it was (`holdSeconds`).
import { type JobState, type Outcome, type WorkOrderState, workOrderMachine } from "../../protocol/states.ts";
import { type RetryableEnding, settle } from "../../protocol/retry.ts";
import type { JobWrites } from "./job-writes.ts";

/** A locked job with what its work order needs to decide. */
export type Settling = {
  job_id: string;
  state: JobState;
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
export const SETTLING_COLUMNS = `j.id::text AS job_id, j.state, j.work_order_id::text AS work_order_id, wo.state AS order_state,
  wo.latest_job_id = j.id AS latest, wo.attempts, wo.max_attempts, wo.retry_on, wo.retry_backoff_seconds, j.cancel_reason`;

/**
 * `holdSeconds`: a job begun is not run again before this (it may still run where it was). One
 * returned unbegun is not held: an agent that only reconnected returns the jobs it was never told
 * of, and nothing runs them.
 */
export type JobEnd = { outcome: Outcome; exitCode: number | null; error: string | null; infrastructure: boolean; seq: number | null; holdSeconds?: number };

/** Records in `writes` the ending of a job the caller has locked; returns how the job and its work order stand. */
export function jobSettle(writes: JobWrites, job: Settling, end: JobEnd): { job: Outcome; order: WorkOrderState } {
  const outcome = end.outcome === "lost" && job.state === "claimed" ? "returned" : end.outcome;
  const next = settle(outcome, end.infrastructure, {
    attempts: job.attempts,
    maxAttempts: job.max_attempts,
    retryOn: job.retry_on,
    backoffSeconds: job.retry_backoff_seconds,
    cancelReason: job.cancel_reason,
  });
  writes.job(job.job_id, {
    state: outcome,
    seq: end.seq ?? undefined,
    finished: true,
    exit_code: end.exitCode,
    error: end.error,
    infrastructure: end.infrastructure,
  });
  if (!job.latest || !workOrderMachine.can(job.order_state, next.state)) return { job: outcome, order: job.order_state };
  // A job returned unbegun is not held: see `JobEnd`.
  const hold = outcome === "returned" ? 0 : (end.holdSeconds ?? 0);
  const delay = next.state === "pending" ? Math.max(next.delaySeconds, hold) : 0;
  writes.order(job.work_order_id, job.job_id, job.order_state, next.state, next.reason, delay, next.refund ?? false);
  return { job: outcome, order: next.state };
}
