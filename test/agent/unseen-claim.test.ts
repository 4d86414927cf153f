// A claim, or an enqueue created claimed for an idle agent, that commits while its answer is lost
// with the database connection leaves a job the database gives an agent that was never told of it.
// The coordinator has that agent reconnect, at once where it saw the answer lost, and otherwise
// once two lease renewals in a row find the job unknown to the agent's session: the welcome lists
// the job, the agent disowns it, and it is returned, not lost, and runs on its one attempt. Real
// coordinator and agent over loopback; the fault is put into the coordinator's database door: the
// statement runs, then its answer is lost.
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, type CoordinatorOptions, startCoordinator } from "../../coordinator/coordinator.ts";
import { workOrdersClaim } from "../../coordinator/sql/work-order-claim.ts";
import type { AgentView, JobView, WorkOrderView } from "../../protocol/api.ts";
import { order, workOrderInsert } from "../store/fixtures.ts";
import { Proxy } from "../support/proxy.ts";
import { until } from "../support/until.ts";

let coordinator: Coordinator;
let proxy: Proxy;
let ciToken: string;
let agentToken: string;
const cleanups: (() => Promise<void> | void)[] = [];

/** A coordinator (with `options`) and a proxy in front of it for the describe block's tests. */
function useCoordinator(options: Pick<CoordinatorOptions, "heartbeatSeconds" | "leaseSeconds"> = {}): void {
  beforeAll(async () => {
    coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger: pino({ level: "silent" }), ...options });
    proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(coordinator.url).port) });
    ciToken = (await tokenCreate(coordinator.db, "ci", "ci")).token;
    agentToken = (await tokenCreate(coordinator.db, "agents", "agent")).token;
  });
  afterAll(async () => {
    await proxy?.close();
    await coordinator?.stop();
  });
}

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const lost = () => Object.assign(new Error("write CONNECTION_CLOSED"), { code: "CONNECTION_CLOSED" });

async function api<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${coordinator.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ciToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as T };
}

/**
 * A started agent in `pool`, dialling through the proxy; `welcomes` counts its connections. Its
 * jobs succeed once `until` resolves (at once by default).
 */
function agentIn(pool: string, { prefetch = 0, until = Promise.resolve() } = {}) {
  const started: string[] = [];
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async (ctx) => {
      started.push(ctx.jobId);
      return { result: until.then(() => ({ outcome: "succeeded" as const, exitCode: 0 })), cancel: async () => {} };
    },
  };
  const seen = { welcomes: 0, started };
  const lines = new Writable({
    write(chunk, _encoding, done) {
      if ((JSON.parse(String(chunk)) as { msg: string }).msg === "connected") seen.welcomes++;
      done();
    },
  });
  const agent = new Agent({
    urls: [`ws://127.0.0.1:${proxy.port}/v1/agent`],
    token: agentToken,
    name: pool,
    labels: { pool },
    capacity: 1,
    prefetch,
    mode: "queue",
    version: "test",
    cancelGraceMs: 100,
    logger: pino({ level: "info" }, lines),
    adapters: () => adapter,
  });
  agent.start();
  cleanups.push(() => agent.stop(1000));
  return seen;
}

/** Once the work order has succeeded: its jobs, the first returned unbegun, the second run. */
async function returnedThenRun(id: string, started: string[]): Promise<void> {
  await until(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).body.state === "succeeded", `work order ${id} to succeed`);
  const { body } = await api<{ items: JobView[] }>("GET", `/v1/jobs?workOrder=${id}`);
  const jobs = body.items.sort((a, b) => Number(a.id) - Number(b.id));
  expect(jobs.map((j) => [j.state, j.attempt])).toEqual([
    ["returned", 1],
    ["succeeded", 1],
  ]);
  expect(started).toEqual([jobs[1]!.id]);
}

/**
 * The next claim statement for agent `name` runs once `before` is done, and then its answer is
 * lost. Other claims for the agent meanwhile find nothing, as they would pass by the rows that
 * statement holds locked.
 */
function loseNextClaim(name: string, before: () => Promise<void> = async () => {}): void {
  const generic = coordinator.db.generic as { query: (text: string, params?: unknown[]) => Promise<unknown[]> };
  const query = generic.query;
  cleanups.push(() => void (generic.query = query));
  let state: "armed" | "in flight" | "done" = "armed";
  generic.query = async (text, params) => {
    if (state === "done" || !text.includes("FOR UPDATE SKIP LOCKED") || !String(params?.[1]).includes(`"${name}"`)) return query(text, params);
    if (state === "in flight") return [];
    state = "in flight";
    await before();
    await query(text, params);
    state = "done";
    throw lost();
  };
}

describe("where the coordinator sees the answer lost", () => {
  useCoordinator();

  test("a claim round whose answer was lost", async () => {
    const { body: order } = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["true"] }, selector: "pool=round" });
    loseNextClaim("round");
    const agent = agentIn("round");
    await returnedThenRun(order.id, agent.started);
    expect(agent.welcomes).toBe(2);
  });

  test("a claim round whose answer was lost after its agent had reconnected: the new session is the one told", async () => {
    const { body: order } = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["true"] }, selector: "pool=moved" });
    // The round is for the first session; the agent is connected anew, welcomed with no job, before it commits.
    let agent!: ReturnType<typeof agentIn>;
    loseNextClaim("moved", async () => {
      proxy.cut();
      await until(() => agent.welcomes === 2, "the agent to reconnect");
    });
    agent = agentIn("moved");
    await returnedThenRun(order.id, agent.started);
    expect(agent.welcomes).toBe(3);
  });

  test("an enqueue created claimed whose commit's answer was lost; sent again, it finds the one order", async () => {
    const agent = agentIn("born");
    await until(() => agent.welcomes === 1, "the agent");
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Keyed, the enqueue is a transaction under a generic plan.
    const { generic } = coordinator.db;
    const transaction = generic.transaction;
    cleanups.push(() => void Object.assign(generic, { transaction }));
    Object.assign(generic, {
      transaction: async (fn: Parameters<typeof transaction>[0]) => {
        Object.assign(generic, { transaction });
        await transaction(fn);
        throw lost();
      },
    });
    const body = { spec: { command: ["true"] }, selector: "pool=born", idempotencyKey: "born-once" };
    const first = await api<{ error: { code: string } }>("POST", "/v1/work-orders", body);
    expect(first).toMatchObject({ status: 503, body: { error: { code: "unavailable" } } });
    const again = await api<WorkOrderView>("POST", "/v1/work-orders", body);
    expect(again.status).toBe(200);
    await returnedThenRun(again.body.id, agent.started);
    expect(agent.welcomes).toBe(2);
  });
});

describe("at the lease renewals", () => {
  useCoordinator({ heartbeatSeconds: 1, leaseSeconds: 4 });

  test("a job the database gives a connected agent that was never told of it", async () => {
    const agent = agentIn("elsewhere");
    let me: AgentView | undefined;
    await until(async () => (me = (await api<{ items: AgentView[] }>("GET", "/v1/agents")).body.items.find((a) => a.name === "elsewhere" && a.connected)) !== undefined, "the agent");
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Claimed as a claim on another replica whose answer was lost would have: nothing here saw it.
    const { row } = await workOrderInsert(coordinator.db, order({ selector: "pool=elsewhere" }));
    await workOrdersClaim(coordinator.db, { labels: { pool: "elsewhere" }, queueMode: true }, [{ agentId: me!.id, name: "elsewhere", want: 1 }]);
    await returnedThenRun(row.id, agent.started);
    expect(agent.welcomes).toBe(2);
  });

  test("jobs an agent runs or holds ahead, over many renewals, are its own: it is not made to reconnect", async () => {
    let release!: () => void;
    const agent = agentIn("busy", { prefetch: 2, until: new Promise<void>((resolve) => (release = resolve)) });
    await until(() => agent.welcomes === 1, "the agent");
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["true"] }, selector: "pool=busy" })).body.id);
    await until(async () => (await api<{ items: JobView[] }>("GET", "/v1/jobs?state=claimed")).body.items.length === 2, "two jobs held ahead");
    // Renewals every half second: six of them.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(agent.started).toHaveLength(1);
    release();
    for (const id of ids) await until(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).body.state === "succeeded", `work order ${id}`);
    expect(agent.welcomes).toBe(1);
  });

  /** Every statement through `door` (the database, or its transactions) that `matches` waits `ms` first, until the returned function is called. */
  function slowed(door: "query" | "transaction", ms: number, matches: (text: string) => boolean = () => true): () => void {
    const db = coordinator.db as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const original = db[door]!;
    const restore = () => void (db[door] = original);
    cleanups.push(restore);
    db[door] = async (...args: unknown[]) => {
      if (door === "transaction" || matches(String(args[0]))) await new Promise((resolve) => setTimeout(resolve, ms));
      return original(...args);
    };
    return restore;
  }

  /** An agent in `pool` running one job (until released) and holding one ahead. */
  async function busyWithOneHeld(pool: string) {
    let release!: () => void;
    const agent = agentIn(pool, { prefetch: 1, until: new Promise<void>((resolve) => (release = resolve)) });
    await until(() => agent.welcomes === 1, "the agent");
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) ids.push((await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["true"] }, selector: `pool=${pool}` })).body.id);
    await until(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${ids[1]}`)).body.state === "claimed" && agent.started.length === 1, "one running, one held");
    return { agent, ids, release };
  }

  test("a held job's end on its way to the database is not taken for a job its session never got", async () => {
    const { agent, ids, release } = await busyWithOneHeld("finishing");
    // The agent answers the cancel at once; its answer then waits three renewals for the database.
    const restore = slowed("transaction", 1500);
    await api("POST", `/v1/work-orders/${ids[1]}/cancel`, { reason: "changed our minds" });
    await until(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${ids[1]}`)).body.state === "cancelled", "the cancel");
    restore();
    release();
    await until(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${ids[0]}`)).body.state === "succeeded", "the running job");
    expect(agent.welcomes).toBe(1);
  });

  test("a session is not judged before the jobs its welcome lists are read", async () => {
    const { agent, ids, release } = await busyWithOneHeld("rejoining");
    // The read of the jobs to list at the welcome takes three renewals.
    const restore = slowed("query", 1500, (text) => text.includes(`AS "cancelReason" FROM jobs`) && text.includes("ORDER BY id"));
    proxy.cut();
    await until(() => agent.welcomes === 2, "the agent to be welcomed again");
    restore();
    release();
    for (const id of ids) await until(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).body.state === "succeeded", `work order ${id}`);
    expect(agent.welcomes).toBe(2);
    expect(agent.started).toHaveLength(2);
  });

  test("a renewal that never answers holds up none after it", async () => {
    const agent = agentIn("hung");
    await until(() => agent.welcomes === 1, "the agent");
    const db = coordinator.db as unknown as { query: (text: string, params?: unknown[]) => Promise<unknown[]> };
    const query = db.query;
    cleanups.push(() => void (db.query = query));
    let hung = false;
    db.query = async (text, params) => {
      if (hung || !text.includes("seen AS (")) return query.call(db, text, params);
      hung = true;
      // A statement stuck on a dead connection.
      return new Promise(() => {});
    };
    await until(() => hung, "a renewal to hang");
    // The lease it missed costs one reconnect; were later renewals held up, one every 0.8 heartbeat.
    await new Promise((resolve) => setTimeout(resolve, 4000));
    expect(agent.welcomes).toBeLessThanOrEqual(2);
  });
});
