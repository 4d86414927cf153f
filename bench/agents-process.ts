// Child entry: K in-process agents on real WebSockets, whose adapter lookup answers a no-op adapter
// (the run succeeds at once, no process is spawned). They boot idle and dial on `go`, so process
// start-up is not timed. A work order whose command is ["probe"] reports `started {workOrderId, t}`
// the moment its adapter starts, for the latency scenarios.
import { pino } from "pino";
import { z } from "zod";
import type { Adapter } from "../adapters/adapter.ts";
import { Agent } from "../agent/agent.ts";
import { childConfig, send, serve, now } from "./support.ts";

export type AgentsConfig = { urls: string[]; token: string; prefix: string; count: number; capacity: number };

const config = childConfig<AgentsConfig>();
const logger = pino({ level: "silent" });
let ran = 0;

const noop: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async (ctx) => {
    ran++;
    const command = (ctx.spec as { command?: unknown[] }).command;
    if (command?.[0] === "probe") send({ type: "started", workOrderId: ctx.workOrderId, t: now() });
    return { result: Promise.resolve({ outcome: "succeeded", exitCode: 0 }), cancel: async () => {} };
  },
};

const agents = Array.from(
  { length: config.count },
  (_, i) =>
    new Agent({
      urls: config.urls,
      token: config.token,
      name: `${config.prefix}-${i}`,
      labels: { pool: "bench" },
      capacity: config.capacity,
      mode: "queue",
      version: "bench",
      cancelGraceMs: 100,
      logger,
      adapters: () => noop,
    }),
);
for (const agent of agents) agent.stopped.catch((error) => console.error(`agent failed: ${error}`));

serve({
  go: () => {
    for (const agent of agents) agent.start();
  },
  ran: () => ran,
  usage: () => ({ rss: process.memoryUsage().rss }),
  stop: async () => {
    await Promise.all(agents.map((agent) => agent.stop(2_000)));
    process.exit(0);
  },
});
send({ type: "ready" });
