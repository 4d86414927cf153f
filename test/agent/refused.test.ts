// A job the coordinator no longer counts as the agent's (here: its lease ran out while the socket
// stayed open, and the reaper returned the job it only held) is stopped the moment the coordinator
// refuses one of its messages, so it does not run on beside the attempt that replaced it; and so
// are the jobs of an agent that another took the name of.
import { afterAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { AgentFailed } from "../../agent/agent.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

/** Runs by job id, until the test ends them; and the jobs whose run was cancelled. */
const runs = new Map<string, (result: RunResult) => void>();
const began: { workOrderId: string; jobId: string }[] = [];
const cancelled: string[] = [];
const gate: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async ({ workOrderId, jobId }) => {
    began.push({ workOrderId, jobId });
    const result = new Promise<RunResult>((resolve) => runs.set(jobId, resolve));
    const cancel = async () => {
      cancelled.push(jobId);
      runs.get(jobId)!({ outcome: "cancelled", exitCode: null });
    };
    return { result, cancel };
  },
};

const fleet = useInProcessCoordinator();

afterAll(() => {
  for (const run of runs.values()) run({ outcome: "succeeded", exitCode: 0 });
});

const api = <T>(method: string, path: string, body?: unknown) => fleet().api<T>(method, path, body);
const stateOf = (id: string) => fleet().stateOf(id);
const runsOf = (workOrderId: string) => began.filter((b) => b.workOrderId === workOrderId).map((b) => b.jobId);

test("a held job begun after the coordinator returned it is stopped when its start is refused", async () => {
  fleet().agent({ name: "lapsed", labels: { pool: "lapse" }, adapter: gate, prefetch: 1 });
  const enqueue = () => api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["gate"] }, selector: "pool=lapse" });
  const first = await enqueue();
  const held = await enqueue();
  await vi.waitFor(async () => expect([await stateOf(first.id), await stateOf(held.id)]).toEqual(["running", "claimed"]));
  // The lease runs out while the socket stays open, as when renewals fail; the reaper returns the held job.
  await fleet().coordinator.db.query(`UPDATE agents SET lease_expires_at = now() - interval '1 second' WHERE name = 'lapsed'`);
  await vi.waitFor(async () => expect(await stateOf(held.id)).toBe("pending"));
  fleet().agent({ name: "standby", labels: { pool: "lapse" }, adapter: gate });
  await vi.waitFor(() => expect(runsOf(held.id)).toHaveLength(1));
  const [replacement] = runsOf(held.id);

  // The lapsed agent's running job ends; it begins its held copy, whose start the coordinator refuses.
  runs.get(runsOf(first.id)[0]!)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(() => expect(runsOf(held.id)).toHaveLength(2));
  const stale = runsOf(held.id)[1]!;
  await vi.waitFor(() => expect(cancelled).toContain(stale));
  expect(cancelled).not.toContain(replacement);
  expect(await stateOf(held.id)).toBe("running");
});

test("an agent replaced by another under its name (4002) stops its jobs at once, and fails once they have ended", async () => {
  const first = fleet().agent({ name: "twice", labels: { pool: "twice" }, adapter: gate });
  const failed = first.stopped.then(
    () => undefined,
    (error: unknown) => error,
  );
  const { id } = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["gate"] }, selector: "pool=twice" });
  await vi.waitFor(() => expect(runsOf(id)).toHaveLength(1));
  const [jobId] = runsOf(id);
  fleet().agent({ name: "twice", labels: { pool: "elsewhere" }, adapter: gate });
  // Not after the fence (half the lease, 15 s), by which time the work order may run again elsewhere.
  await vi.waitFor(() => expect(cancelled).toContain(jobId), { timeout: 3_000 });
  expect(await failed).toBeInstanceOf(AgentFailed);
});

test("an agent whose hello is refused fails with what the coordinator said, not only its close code's meaning", async () => {
  const labels = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
  const error = await fleet().agent({ name: "overlabelled", labels, adapter: gate }).stopped.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(AgentFailed);
  expect(String(error)).toMatch(/the coordinator refused the protocol: .*labels.*64/);
});
