// At its run timeout a job is stopped with the timeout grace, not the (possibly much longer) cancel
// grace: past its timeout by a lease the coordinator ends the job and may retry it, and the two
// attempts must not overlap.
import { expect, test } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { JobRunner } from "../../agent/job-runner.ts";
import type { JobMessageBody } from "../../agent/outbox.ts";

/**
 * A run that records each cancel's grace and ends only when `end` is called, which a cancel does
 * when `endOnCancel`; and a job with `timeoutSeconds` that runs through it.
 */
function gated(timeoutSeconds: number | null, endOnCancel: boolean) {
  const graces: number[] = [];
  let end!: (result: RunResult) => void;
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({
      result: new Promise<RunResult>((resolve) => (end = resolve)),
      cancel: async (graceMs) => {
        graces.push(graceMs);
        if (endOnCancel) end({ outcome: "cancelled", exitCode: null });
      },
    }),
  };
  const job = { jobId: "1", workOrderId: "1", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds, adopt: null } as const;
  return { graces, adapter, job, end: (result: RunResult) => end(result) };
}

const unexpected = (message: string) => expect.unreachable(message);

test("a later stop with a sooner deadline brings the first one's forward", async () => {
  const { graces, adapter, job, end } = gated(null, false);
  const runner = new JobRunner(job, () => {}, () => adapter, { cancelGraceMs: 60_000, warn: unexpected });
  runner.begin();
  await new Promise((resolve) => setImmediate(resolve));
  runner.handBack(); // a drain: the whole cancel grace
  runner.handBack(5_000); // then out of touch: gone by the fence
  runner.cancel(); // a cancel asks for no sooner deadline
  runner.handBack(0); // refused by the coordinator: at once
  end({ outcome: "cancelled", exitCode: null });
  expect(await runner.done).toMatchObject({ outcome: "failed", infrastructure: true });
  expect(graces).toEqual([60_000, 5_000, 0]);
});

test("the run timeout stops the run with the timeout grace, and the job ends timed_out", async () => {
  const { graces, adapter, job } = gated(1, true);
  const reports: JobMessageBody[] = [];
  const runner = new JobRunner(job, (body) => reports.push(body), () => adapter, { cancelGraceMs: 60_000, timeoutGraceMs: 50, warn: unexpected });
  runner.begin();
  expect(await runner.done).toMatchObject({ outcome: "timed_out" });
  expect(graces).toEqual([50]);
  expect(reports.at(-1)).toMatchObject({ type: "job.finished", outcome: "timed_out" });
});

test.each([
  ["rejects", async () => Promise.reject(new Error("the CI system answered 503"))],
  ["throws", () => {
    throw new Error("the CI system answered 503");
  }],
])("an adapter whose cancel %s is warned of, and the run's result still ends the job", async (_, cancel) => {
  let end!: (result: RunResult) => void;
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({ result: new Promise<RunResult>((resolve) => (end = resolve)), cancel: cancel as (graceMs: number) => Promise<void> }),
  };
  const job = { jobId: "7", workOrderId: "7", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds: null, adopt: null } as const;
  const warnings: unknown[] = [];
  const runner = new JobRunner(job, () => {}, () => adapter, { cancelGraceMs: 1_000, warn: (message, fields) => warnings.push({ message, ...fields }) });
  runner.begin();
  await new Promise((resolve) => setImmediate(resolve));
  runner.cancel();
  await new Promise((resolve) => setImmediate(resolve));
  expect(warnings).toEqual([{ message: "the adapter could not stop the run", job: "7", error: "Error: the CI system answered 503" }]);
  end({ outcome: "cancelled", exitCode: null });
  expect(await runner.done).toMatchObject({ outcome: "cancelled" });
});

test("a job's output past its log limit is dropped after a line that says so, and the job runs on to its end", async () => {
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async ({ log }) => {
      for (let i = 0; i < 100; i++) log("x".repeat(1000));
      return { result: Promise.resolve({ outcome: "succeeded", exitCode: 0 }), cancel: async () => {} };
    },
  };
  const { job } = gated(null, false);
  const reports: JobMessageBody[] = [];
  const runner = new JobRunner(job, (body) => reports.push(body), () => adapter, { cancelGraceMs: 1000, maxLogBytes: 5_000, warn: unexpected });
  runner.begin();
  expect(await runner.done).toMatchObject({ outcome: "succeeded" });
  const logged = reports.flatMap((r) => (r.type === "job.log" ? [r.data] : [])).join("");
  expect(logged).toBe(`${"x".repeat(5_000)}\n[jobfleet: the log reached its limit of 5000 bytes; the rest of the job's output is dropped]\n`);
});
