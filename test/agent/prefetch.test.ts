// An agent with `prefetch` holds jobs beyond its capacity and begins each as a slot frees, highest
// priority first. A held job has not begun: cancelled, it never reaches the adapter; handed back on
// drain, it is returned, its work order goes straight back to the queue with the attempt not
// counted, and an idle agent is woken for it. The coordinator, agents and WebSockets are real; the
// adapter is a gate the test opens.
import { afterAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import type { Agent } from "../../agent/agent.ts";
import type { JobView, WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

/** Runs that go on until the test finishes them, by work order. */
const runs = new Map<string, (result: RunResult) => void>();
const began: string[] = [];
const gate: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async (ctx) => {
    began.push(ctx.workOrderId);
    const result = new Promise<RunResult>((resolve) => runs.set(ctx.workOrderId, resolve));
    return { externalId: `run-${ctx.jobId}`, result, cancel: async () => runs.get(ctx.workOrderId)!({ outcome: "cancelled", exitCode: null }) };
  },
};

const fleet = useInProcessCoordinator();

afterAll(() => {
  for (const run of runs.values()) run({ outcome: "succeeded", exitCode: 0 });
});

const agent = (name: string, pool: string, prefetch: number): Agent => fleet().agent({ name, labels: { pool }, adapter: gate, prefetch });

const api = <T>(method: string, path: string, body?: unknown) => fleet().api<T>(method, path, body);

const enqueueOne = (pool: string, priority = 0) =>
  api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["gate"] }, selector: `pool=${pool}`, priority });
const enqueue = (pool: string, n: number) => Promise.all(Array.from({ length: n }, () => enqueueOne(pool)));

async function jobsOf(orderId: string): Promise<Pick<JobView, "attempt" | "agent" | "state">[]> {
  const { items } = await api<{ items: JobView[] }>("GET", `/v1/jobs?workOrder=${orderId}`);
  return items.map(({ attempt, agent, state }) => ({ attempt, agent, state }));
}

const stateOf = (id: string) => fleet().stateOf(id);

test("holds jobs beyond its capacity, begins one per free slot, and never runs a cancelled held job", async () => {
  agent("holder", "hold", 2);
  const orders = await enqueue("hold", 3);
  const { items } = await api<{ items: { name: string; capacity: number; prefetch: number }[] }>("GET", "/v1/agents");
  expect(items.find((a) => a.name === "holder")).toMatchObject({ capacity: 1, prefetch: 2 });
  const ids = orders.map((o) => o.id);
  await vi.waitFor(async () => expect(await Promise.all(ids.map(stateOf))).toEqual(["running", "claimed", "claimed"]));
  expect(began.filter((id) => ids.includes(id))).toEqual([ids[0]]);

  await api("POST", `/v1/work-orders/${ids[1]}/cancel`, { reason: "not needed" });
  await vi.waitFor(async () => expect(await stateOf(ids[1]!)).toBe("cancelled"));
  expect(await jobsOf(ids[1]!)).toEqual([{ attempt: 1, agent: "holder", state: "cancelled" }]);

  runs.get(ids[0]!)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(() => expect(began.filter((id) => ids.includes(id))).toEqual([ids[0], ids[2]]));
  runs.get(ids[2]!)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await Promise.all(ids.map(stateOf))).toEqual(["succeeded", "cancelled", "succeeded"]));
});

test("a drain returns the held jobs: back in the queue at once, the attempt not counted, run by an idle agent", async () => {
  const holder = agent("drainer", "drain", 2);
  const orders = await enqueue("drain", 3);
  const ids = orders.map((o) => o.id);
  await vi.waitFor(async () => expect(await Promise.all(ids.map(stateOf))).toEqual(["running", "claimed", "claimed"]));
  // Connected once the pool is empty: its group's claim came back short, so only a wake-up brings it work.
  agent("idle", "drain", 0);
  await vi.waitFor(async () => expect((await api<{ items: { name: string }[] }>("GET", "/v1/agents")).items.map((a) => a.name)).toContain("idle"));

  const stopped = holder.stop(10_000);
  await vi.waitFor(() => expect(began).toContain(ids[1]));
  // Begun on the agent; its report of running reaches the coordinator a moment later.
  await vi.waitFor(async () =>
    expect(await jobsOf(ids[1]!)).toEqual([
      { attempt: 1, agent: "idle", state: "running" },
      { attempt: 1, agent: "drainer", state: "returned" },
    ]),
  );
  expect((await api<WorkOrderView>("GET", `/v1/work-orders/${ids[1]}`)).attempts).toBe(1);

  runs.get(ids[0]!)!({ outcome: "succeeded", exitCode: 0 });
  await stopped;
  runs.get(ids[1]!)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(() => expect(began).toContain(ids[2]));
  runs.get(ids[2]!)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await Promise.all(ids.map(stateOf))).toEqual(["succeeded", "succeeded", "succeeded"]));
  expect((await jobsOf(ids[2]!)).map((j) => j.state)).toEqual(["succeeded", "returned"]);
});

test("held jobs begin highest priority first, then oldest, whatever order they came in", async () => {
  agent("sorter", "sort", 2);
  const first = await enqueueOne("sort");
  await vi.waitFor(() => expect(began).toContain(first.id));
  const low = await enqueueOne("sort");
  await vi.waitFor(async () => expect(await stateOf(low.id)).toBe("claimed"));
  const high = await enqueueOne("sort", 5);
  await vi.waitFor(async () => expect(await stateOf(high.id)).toBe("claimed"));

  runs.get(first.id)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(() => expect(began).toContain(high.id));
  expect(began).not.toContain(low.id);
  runs.get(high.id)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(() => expect(began).toContain(low.id));
  runs.get(low.id)!({ outcome: "succeeded", exitCode: 0 });
});
