// An agent that takes a name whose holder is cut off from its coordinator, not gone (a network
// partition; nothing tells the two apart), disowns the holder's jobs at its welcome. The holder
// runs them on until its fence, half a lease after the last word it heard: the jobs it began are
// run again only once its lease has run out, so no work order runs twice at once. Real coordinator and agents over loopback; the partition is a proxy that passes no byte
// and tells neither end of a close.
import { pino } from "pino";
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { Proxy } from "../support/proxy.ts";

let coordinator: Coordinator;
let proxy: Proxy;
let ciToken: string;
let agentToken: string;
const agents: Agent[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger: pino({ level: "silent" }), heartbeatSeconds: 1, leaseSeconds: 4 });
  proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(coordinator.url).port) });
  ciToken = (await tokenCreate(coordinator.db, "ci", "ci")).token;
  agentToken = (await tokenCreate(coordinator.db, "agents", "agent")).token;
});

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.stop(1000)));
  await proxy?.close();
  await coordinator?.stop();
});

/** What the runs did, in order: `<agent> began <work order>/<attempt>`, `<agent> ended <work order>/<attempt>`. */
const events: string[] = [];

/** Runs until cancelled, recording when it begins and ends. */
function recorded(who: string): Adapter<unknown> {
  return {
    name: "exec",
    spec: z.unknown(),
    start: async ({ workOrderId, attempt }) => {
      events.push(`${who} began ${workOrderId}/${attempt}`);
      let end!: (result: RunResult) => void;
      const result = new Promise<RunResult>((resolve) => (end = resolve)).finally(() => events.push(`${who} ended ${workOrderId}/${attempt}`));
      return { result, cancel: async () => end({ outcome: "cancelled", exitCode: null }) };
    },
  };
}

function agent(who: string, url: string): Agent {
  const started = new Agent({
    urls: [url],
    token: agentToken,
    name: "twin",
    labels: { pool: "twins" },
    capacity: 1,
    mode: "queue",
    version: "test",
    cancelGraceMs: 100,
    logger: pino({ level: "silent" }),
    adapters: () => recorded(who),
  });
  started.start();
  agents.push(started);
  return started;
}

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${coordinator.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${ciToken}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return (await response.json()) as T;
}

test("a job disowned by the agent that took a cut-off holder's name is retried only once the holder's lease ran out, after its fence stopped the run", async () => {
  agent("cut-off", `ws://127.0.0.1:${proxy.port}/v1/agent`);
  const order = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["run"] }, selector: "pool=twins", maxAttempts: 2, retryBackoffSeconds: 0 });
  await vi.waitFor(async () => expect((await api<WorkOrderView>("GET", `/v1/work-orders/${order.id}`)).state).toBe("running"));

  proxy.partition();
  agent("newcomer", coordinator.agentUrl);
  await vi.waitFor(() => expect(events).toContain(`newcomer began ${order.id}/2`), { timeout: 15_000 });
  expect(events).toEqual([`cut-off began ${order.id}/1`, `cut-off ended ${order.id}/1`, `newcomer began ${order.id}/2`]);
  expect((await api<WorkOrderView>("GET", `/v1/work-orders/${order.id}`)).attempts).toBe(2);
}, 30_000);
