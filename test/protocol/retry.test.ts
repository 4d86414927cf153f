import { describe, expect, it } from "vitest";
import { DEFAULT_RETRY_ON, type RetryPolicy, settle } from "../../protocol/retry.ts";

const policy = (over: Partial<RetryPolicy> = {}) => ({
  attempts: 1,
  maxAttempts: 3,
  retryOn: DEFAULT_RETRY_ON,
  backoffSeconds: 10,
  cancelReason: null,
  ...over,
});

describe("settle", () => {
  it("by default retries a lost job and an infrastructure failure, never the job's own failure", () => {
    expect(settle("lost", false, policy())).toMatchObject({ state: "pending" });
    expect(settle("failed", true, policy())).toMatchObject({ state: "pending" });
    expect(settle("failed", false, policy())).toEqual({ state: "failed", reason: null });
    expect(settle("timed_out", false, policy())).toEqual({ state: "timed_out", reason: null });
    expect(settle("succeeded", false, policy())).toEqual({ state: "succeeded", reason: null });
    expect(settle("cancelled", false, policy())).toEqual({ state: "cancelled", reason: null });
  });

  it("retries the job's own failure and timeouts only when asked", () => {
    const asked = policy({ retryOn: ["failed", "timed_out"] });
    expect(settle("failed", false, asked)).toMatchObject({ state: "pending" });
    expect(settle("timed_out", false, asked)).toMatchObject({ state: "pending" });
    expect(settle("lost", false, asked)).toEqual({ state: "failed", reason: "the agent was lost" });
  });

  it("stops retrying when the attempts are used up", () => {
    expect(settle("lost", false, policy({ attempts: 3 }))).toEqual({ state: "failed", reason: "the agent was lost" });
    expect(settle("failed", true, policy({ attempts: 3 }))).toEqual({ state: "failed", reason: "infrastructure error" });
  });

  it("never retries a work order whose cancel was requested", () => {
    expect(settle("lost", false, policy({ cancelReason: "superseded by #43" }))).toEqual({ state: "cancelled", reason: "superseded by #43" });
    expect(settle("succeeded", false, policy({ cancelReason: "superseded by #43" }))).toMatchObject({ state: "succeeded" });
    expect(settle("returned", false, policy({ cancelReason: "superseded by #43" }))).toEqual({ state: "cancelled", reason: "superseded by #43", refund: true });
  });

  it("backs off exponentially, with jitter in the upper half of each step, up to an hour", () => {
    const delay = (attempts: number, random: number) => {
      const s = settle("lost", false, policy({ attempts, maxAttempts: 100 }), random);
      return s.state === "pending" ? s.delaySeconds : NaN;
    };
    expect([1, 2, 3, 4].map((a) => delay(a, 0))).toEqual([5, 10, 20, 40]);
    expect([1, 2, 3, 4].map((a) => delay(a, 0.999999))).toEqual([1, 2, 3, 4].map((a) => expect.closeTo(10 * 2 ** (a - 1), 3)));
    expect(delay(30, 0.5)).toBe(2700);
  });
});
