// The bench's agents: many real `Agent`s in one child process, each dialling over its own
// WebSocket, with one adapter for every work order (no process spawned).
import type { Logger } from "pino";
import { z } from "zod";
import type { Adapter, Run, RunContext } from "../adapters/adapter.ts";
import { Agent } from "../agent/agent.ts";

export type BenchAgentsOptions = {
  urls: string[];
  token: string;
  /** Agent i is named `${prefix}-${i}`. */
  prefix: string;
  count: number;
  labels: Record<string, string>;
  capacity: number;
  /** Jobs each agent holds ahead of its capacity (default 0). */
  prefetch?: number;
  logger: Logger;
  start: (ctx: RunContext<unknown>) => Promise<Run>;
};

/** A run that succeeds once `after` settles (at once without it). */
export const succeeded = (after: Promise<unknown> = Promise.resolve()): Run => ({
  result: after.then(() => ({ outcome: "succeeded" as const, exitCode: 0 })),
  cancel: async () => {},
});

export function benchAgents(options: BenchAgentsOptions): Agent[] {
  const adapter: Adapter<unknown> = { name: "exec", spec: z.unknown(), start: options.start };
  return Array.from(
    { length: options.count },
    (_, i) =>
      new Agent({
        urls: options.urls,
        token: options.token,
        name: `${options.prefix}-${i}`,
        labels: options.labels,
        capacity: options.capacity,
        prefetch: options.prefetch ?? 0,
        mode: "queue",
        version: "bench",
        cancelGraceMs: 100,
        logger: options.logger,
        adapters: () => adapter,
      }),
  );
}
