// A claim that committed while its answer was lost leaves a job the database gives an agent that was
// never told of it. The coordinator then has that agent reconnect (see the dispatcher's and
// enqueuer's tests); this is what follows: the welcome lists the job, the agent disowns it, and it
// is returned, not lost, and runs on its one attempt.
import { pino } from "pino";
import { afterAll, beforeAll, expect, test } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { workOrdersClaim } from "../../coordinator/sql/work-order-claim.ts";
import type { AgentView, JobView, WorkOrderView } from "../../protocol/api.ts";
import { order, workOrderInsert } from "../store/fixtures.ts";
import { Proxy } from "../support/proxy.ts";

const logger = pino({ level: "silent" });
let coordinator: Coordinator;
let proxy: Proxy;
let ciToken: string;
let agentToken: string;

beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger });
  proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(coordinator.url).port) });
  ciToken = (await tokenCreate(coordinator.db, "ci", "ci")).token;
  agentToken = (await tokenCreate(coordinator.db, "agents", "agent")).token;
});
afterAll(async () => {
  await proxy?.close();
  await coordinator?.stop();
});

async function api<T>(path: string): Promise<T> {
  return (await (await fetch(`${coordinator.url}${path}`, { headers: { authorization: `Bearer ${ciToken}` } })).json()) as T;
}

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let waited = 0; !(await condition()); waited += 20) {
    if (waited > 20_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("a job claimed for an agent that was never told is returned at its reconnect, and runs on its one attempt", async () => {
  const started: string[] = [];
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async (ctx) => {
      started.push(ctx.jobId);
      return { result: Promise.resolve({ outcome: "succeeded", exitCode: 0 }), cancel: async () => {} };
    },
  };
  const agent = new Agent({
    urls: [`ws://127.0.0.1:${proxy.port}/v1/agent`],
    token: agentToken,
    name: "unseen",
    labels: { pool: "unseen" },
    capacity: 1,
    mode: "queue",
    version: "test",
    cancelGraceMs: 100,
    logger,
    adapters: () => adapter,
  });
  agent.start();
  try {
    let me: AgentView | undefined;
    await until(async () => (me = (await api<{ items: AgentView[] }>("/v1/agents")).items.find((a) => a.name === "unseen" && a.connected)) !== undefined, "the agent");
    // Its first round has found nothing. The order is inserted without a wake-up, and claimed for
    // it as a round whose answer was lost would have.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const { row } = await workOrderInsert(coordinator.db, order({ selector: "pool=unseen" }));
    const [claimed] = await workOrdersClaim(coordinator.db, { labels: { pool: "unseen" }, queueMode: true }, [{ agentId: me!.id, name: "unseen", want: 1 }]);
    expect(claimed!.workOrderId).toBe(row.id);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(started).toEqual([]);

    proxy.cut();
    await until(async () => (await api<WorkOrderView>(`/v1/work-orders/${row.id}`)).state === "succeeded", "the work order to succeed");
    const { items } = await api<{ items: JobView[] }>(`/v1/jobs?workOrder=${row.id}`);
    expect(items.map((j) => [j.state, j.attempt]).sort()).toEqual([
      ["returned", 1],
      ["succeeded", 1],
    ]);
    expect(started).toHaveLength(1);
    expect(started[0]).not.toBe(claimed!.jobId);
  } finally {
    await agent.stop(1000);
  }
});
