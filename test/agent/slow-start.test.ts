// An adapter whose start is slow, or never returns (an external system that stops answering its
// trigger), is still held to the run timeout and reachable by a cancel: the timeout counts from
// before the adapter is called, and a stop that comes while it starts ends the job after the
// grace, stopping the run if it starts later. Before, both waited for the start, for ever.
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import { JobRunner } from "../../agent/job-runner.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import type { WorkOrderView } from "../../protocol/api.ts";

const hung: Adapter<unknown> = { name: "exec", spec: z.unknown(), start: () => new Promise(() => {}) };

const job = (timeoutSeconds: number) =>
  ({ jobId: "1", workOrderId: "1", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds, adopt: null }) as const;

describe("the job runner", () => {
  test("a start that never returns ends timed_out at the run timeout", async () => {
    const runner = new JobRunner(job(1), () => {}, () => hung, { cancelGraceMs: 100, timeoutGraceMs: 100, warn: () => {} });
    runner.begin();
    await expect(runner.done).resolves.toMatchObject({ outcome: "timed_out" });
  });

  test("a start slower than the timeout ends timed_out, and the run it starts late is stopped", async () => {
    let startLate!: () => void;
    let cancelled = false;
    const slow: Adapter<unknown> = {
      name: "exec",
      spec: z.unknown(),
      start: async () => {
        await new Promise<void>((resolve) => (startLate = resolve));
        let end!: (result: RunResult) => void;
        const result = new Promise<RunResult>((resolve) => (end = resolve));
        return { result, cancel: async () => void ((cancelled = true), end({ outcome: "cancelled", exitCode: null })) };
      },
    };
    const runner = new JobRunner(job(1), () => {}, () => slow, { cancelGraceMs: 100, timeoutGraceMs: 100, warn: () => {} });
    runner.begin();
    await expect(runner.done).resolves.toMatchObject({ outcome: "timed_out" });
    startLate();
    await vi.waitFor(() => expect(cancelled).toBe(true));
  });

  test("a run that starts within the grace after the timeout is stopped within what is left of it, not a fresh grace", async () => {
    const graces: number[] = [];
    const startsIn = (ms: number): Adapter<unknown> => ({
      name: "exec",
      spec: z.unknown(),
      start: async () => {
        await new Promise((resolve) => setTimeout(resolve, ms));
        let end!: (result: RunResult) => void;
        const result = new Promise<RunResult>((resolve) => (end = resolve));
        return { result, cancel: async (graceMs) => void (graces.push(graceMs), end({ outcome: "cancelled", exitCode: null })) };
      },
    });
    // The timeout fires at 1 s; one start returns 0.6 s into its 1 s grace (0.4 s left), the other 0.6 s after the give-up.
    for (const startMs of [1_600, 2_600]) {
      const runner = new JobRunner(job(1), () => {}, () => startsIn(startMs), { cancelGraceMs: 1_000, timeoutGraceMs: 1_000, warn: () => {} });
      runner.begin();
      await expect(runner.done).resolves.toMatchObject({ outcome: "timed_out" });
    }
    await vi.waitFor(() => expect(graces).toHaveLength(2));
    expect(graces[0]).toBeGreaterThan(0);
    expect(graces[0]).toBeLessThan(700);
    expect(graces[1]).toBe(0);
  });
});

describe("through a coordinator", () => {
  const logger = pino({ level: "silent" });
  let coordinator: Coordinator;
  let ci: string;
  const agents: Agent[] = [];

  beforeAll(async () => {
    coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, heartbeatSeconds: 1, leaseSeconds: 4, logger });
    ci = (await tokenCreate(coordinator.db, "ci", "ci")).token;
    const token = (await tokenCreate(coordinator.db, "agents", "agent")).token;
    for (const pool of ["hang-timeout", "hang-cancel"]) {
      const agent = new Agent({ urls: [coordinator.agentUrl], token, name: pool, labels: { pool }, capacity: 1, mode: "queue", version: "test", cancelGraceMs: 100, logger, adapters: () => hung });
      agent.start();
      agents.push(agent);
    }
  });
  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop(200)));
    await coordinator?.stop();
  });

  const api = async <T>(method: string, path: string, body?: unknown) =>
    (await (
      await fetch(`${coordinator.url}${path}`, { method, headers: { authorization: `Bearer ${ci}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) })
    ).json()) as T;
  const states = async (id: string) => {
    const now = await api<WorkOrderView>("GET", `/v1/work-orders/${id}`);
    return { order: now.state, job: now.latestJob?.state };
  };

  test("timeoutSeconds ends the work order timed_out while its adapter is still starting", async () => {
    const { id } = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["x"] }, selector: "pool=hang-timeout", timeoutSeconds: 1 });
    await expect.poll(() => states(id), { timeout: 10_000 }).toEqual({ order: "timed_out", job: "timed_out" });
  });

  test("a cancel ends a work order whose adapter is still starting", async () => {
    const { id } = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["x"] }, selector: "pool=hang-cancel" });
    await expect.poll(async () => (await states(id)).job, { timeout: 10_000 }).toBe("starting");
    await api("POST", `/v1/work-orders/${id}/cancel`, {});
    await expect.poll(() => states(id), { timeout: 10_000 }).toEqual({ order: "cancelled", job: "cancelled" });
  });
});
