// What happens to a work order when its job ends: it ends the same way, or, when its retry policy
// covers that ending and attempts are left, it waits (with exponential backoff and jitter) to be
// claimed again. A job's own failure never retries unless the work order asks for it.
import type { Ending, Outcome } from "./states.ts";

/** The endings a work order may retry on. `infrastructure`: the agent or adapter failed, not the job. */
export const retryableEndings = ["lost", "infrastructure", "timed_out", "failed"] as const;
export type RetryableEnding = (typeof retryableEndings)[number];

export const DEFAULT_RETRY_ON: RetryableEnding[] = ["lost", "infrastructure"];
export const MAX_RETRY_DELAY_SECONDS = 3600;

export type RetryPolicy = {
  attempts: number;
  maxAttempts: number;
  retryOn: readonly RetryableEnding[];
  backoffSeconds: number;
  /** Why a cancel was asked for, if one was. */
  cancelReason: string | null;
};

/** `refund`: the job never began, so its attempt is not counted, however the work order goes on. */
export type Settlement =
  | { state: Ending; reason: string | null; refund?: true }
  | { state: "pending"; delaySeconds: number; reason: string; refund?: true };

function kind(outcome: Outcome, infrastructure: boolean): RetryableEnding | null {
  if (outcome === "lost" || outcome === "timed_out") return outcome;
  if (outcome === "failed") return infrastructure ? "infrastructure" : "failed";
  return null;
}

/**
 * How the work order goes on after its job's `outcome`. A work order whose cancel was requested
 * is not retried; a job returned unbegun puts its work order straight back in the queue. `random` is in [0, 1); the delay is between half and all of the exponential step.
 */
export function settle(
  outcome: Outcome,
  infrastructure: boolean,
  policy: RetryPolicy,
  random = Math.random(),
): Settlement {
  if (policy.cancelReason !== null && outcome !== "succeeded") {
    return { state: "cancelled", reason: policy.cancelReason, ...(outcome === "returned" && { refund: true as const }) };
  }
  if (outcome === "returned") return { state: "pending", delaySeconds: 0, reason: "returned before it began", refund: true };
  const ending = kind(outcome, infrastructure);
  if (ending && policy.retryOn.includes(ending) && policy.attempts < policy.maxAttempts) {
    const step = Math.min(MAX_RETRY_DELAY_SECONDS, policy.backoffSeconds * 2 ** (policy.attempts - 1));
    const reason = `retry after ${ending} (attempt ${policy.attempts} of ${policy.maxAttempts})`;
    return { state: "pending", delaySeconds: step / 2 + (random * step) / 2, reason };
  }
  if (outcome === "lost") return { state: "failed", reason: "the agent was lost" };
  return { state: outcome, reason: ending === "infrastructure" ? "infrastructure error" : null };
}
