// An agent out of touch stops its jobs at half the lease, with a grace that ends a heartbeat short
// of the lease, counted from the last word of a coordinator that held its lease. A coordinator
// that answers while it cannot renew leases (its database down: it accepts the socket and closes
// it with 1013) renews nothing, so what the agent hears while redialling must not push the end out.
import { once } from "node:events";
import { pino } from "pino";
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { WebSocketServer } from "ws";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { Proxy } from "../support/proxy.ts";

const logger = pino({ level: "silent" });
let coordinator: Coordinator;
let proxy: Proxy;
let unavailable: WebSocketServer;

beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, heartbeatSeconds: 1, leaseSeconds: 6, logger });
  proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(coordinator.url).port) });
  unavailable = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  unavailable.on("connection", (socket) => socket.close(1013, "the database is unavailable"));
  await once(unavailable, "listening");
});

afterAll(async () => {
  await proxy?.close();
  unavailable?.close();
  await coordinator?.stop();
});

test("the fence's grace ends a heartbeat short of the lease after the last word, whatever is heard while redialling", { timeout: 30_000 }, async () => {
  const graces: { graceMs: number; at: number }[] = [];
  const started: string[] = [];
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async ({ jobId }) => {
      started.push(jobId);
      let end!: () => void;
      const result = new Promise<{ outcome: "cancelled"; exitCode: null }>((resolve) => (end = () => resolve({ outcome: "cancelled", exitCode: null })));
      return { result, cancel: async (graceMs) => (graces.push({ graceMs, at: Date.now() }), end()) };
    },
  };
  const agent = new Agent({
    urls: [`ws://127.0.0.1:${proxy.port}/v1/agent`],
    token: (await tokenCreate(coordinator.db, "agents", "agent")).token,
    name: "fenced",
    labels: { pool: "fence" },
    capacity: 1,
    mode: "queue",
    version: "test",
    cancelGraceMs: 60_000,
    logger,
    adapters: () => adapter,
  });
  agent.start();
  try {
    const ci = (await tokenCreate(coordinator.db, "ci", "ci")).token;
    await fetch(`${coordinator.url}/v1/work-orders`, {
      method: "POST",
      headers: { authorization: `Bearer ${ci}`, "content-type": "application/json" },
      body: JSON.stringify({ spec: { command: ["x"] }, selector: "pool=fence" }),
    }).then((r) => r.json() as Promise<WorkOrderView>);
    await vi.waitFor(() => expect(started).toHaveLength(1), { timeout: 10_000 });

    // The coordinator goes away; what answers in its place takes the socket and closes it.
    proxy.retarget({ host: "127.0.0.1", port: (unavailable.address() as { port: number }).port });
    const cut = Date.now();
    proxy.cut();
    await vi.waitFor(() => expect(graces).toHaveLength(1), { timeout: 10_000 });
    // Lease 6 s, heartbeat 1 s: the run must be gone 5 s after the last word, which came before the cut.
    const [{ graceMs, at }] = graces as [{ graceMs: number; at: number }];
    expect(graceMs).toBeLessThanOrEqual(5000 - (at - cut));
    // Nor stopped at once: the fence falls at half the lease, 3 s after the last word, which came a
    // beat (1 s) before the cut, or a little more on a slow machine; and it leaves a grace.
    expect(at - cut).toBeGreaterThanOrEqual(1000);
    expect(graceMs).toBeGreaterThan(0);
  } finally {
    await agent.stop(1000);
  }
});
