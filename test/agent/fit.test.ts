// What an adapter reports reaches the coordinator within the protocol's bounds, so no message of a
// job is refused and the job always finishes: overlong status and error lines are cut, an exit code
// past 32 bits travels as its signed value, and a run id or address the coordinator would refuse is
// left out.
import { afterAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import type { Agent } from "../../agent/agent.ts";
import { fitted } from "../../agent/fit.ts";
import { cut } from "../../protocol/cut.ts";
import type { JobView, WorkOrderView } from "../../protocol/api.ts";
import { jobFinished, jobStarted, jobStatus } from "../../protocol/messages.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

test("cut keeps at most the bound, never half a surrogate pair, and says it cut", () => {
  expect(cut("short", 10)).toBe("short");
  expect(cut("x".repeat(20), 10)).toBe(`${"x".repeat(9)}…`);
  expect(cut(`${"x".repeat(8)}🌍🌍`, 10)).toBe(`${"x".repeat(8)}…`);
});

test("every fitted message passes the protocol's schema", () => {
  const jobId = "1";
  const status = fitted({ type: "job.status", jobId, status: "s".repeat(5000), externalId: "i".repeat(600), externalUrl: "not a url" });
  expect(jobStatus.safeParse({ ...status, seq: 1 }).success).toBe(true);
  expect(status).toMatchObject({ externalId: undefined, externalUrl: undefined });
  expect(jobStatus.safeParse({ ...fitted({ type: "job.status", jobId, status: "" }), seq: 1 }).success).toBe(true);
  const started = fitted({ type: "job.started", jobId, externalId: "run-7", externalUrl: "https://ci.example/run/7" });
  expect(started).toMatchObject({ externalId: "run-7", externalUrl: "https://ci.example/run/7" });
  expect(jobStarted.safeParse({ ...started, seq: 1 }).success).toBe(true);
  const finished = fitted({ type: "job.finished", jobId, outcome: "failed", exitCode: 0xc0000005, error: "e".repeat(100_000), infrastructure: false });
  expect(jobFinished.safeParse({ ...finished, seq: 1 }).success).toBe(true);
  expect(finished).toMatchObject({ exitCode: -1073741819 });
  // Not a number an exit could be: none, rather than 0, which reads as success.
  for (const exitCode of [Number.NaN, Number.POSITIVE_INFINITY, 1.5]) {
    expect(fitted({ type: "job.finished", jobId, outcome: "failed", exitCode, infrastructure: false })).toMatchObject({ exitCode: null });
  }
});

/** Reports a status and an error far past the protocol's bounds, and a Windows crash's exit code. */
const verbose: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async (ctx) => {
    ctx.status(`step ${"s".repeat(5000)}`);
    ctx.log("working\n");
    return { externalId: "x".repeat(600), result: Promise.resolve({ outcome: "failed", exitCode: 0xc0000005, error: `crashed: ${"e".repeat(100_000)}` }), cancel: async () => {} };
  },
};

const fleet = useInProcessCoordinator();
let agent: Agent | undefined;
afterAll(() => agent?.stop(1000));

test("a job whose adapter reports past the bounds still finishes, with what fits", async () => {
  agent = fleet().agent({ name: "verbose", labels: { pool: "verbose" }, adapter: verbose });
  const order = await fleet().api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["x"] }, selector: "pool=verbose" });
  await vi.waitFor(async () => expect((await fleet().api<WorkOrderView>("GET", `/v1/work-orders/${order.id}`)).state).toBe("failed"), { timeout: 10_000 });
  const { items } = await fleet().api<{ items: JobView[] }>("GET", `/v1/jobs?workOrder=${order.id}`);
  expect(items).toHaveLength(1);
  expect(items[0]).toMatchObject({ state: "failed", exitCode: -1073741819, externalId: null });
  expect(items[0]!.error).toHaveLength(4096);
  expect(items[0]!.status).toHaveLength(1024);
});
