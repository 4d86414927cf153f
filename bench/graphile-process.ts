// Child entry: one graphile-worker runner with a no-op task, started on `go` (so process start-up is
// not timed), with its defaults or tuned for throughput per its performance docs.
import { Logger, run, type Runner } from "graphile-worker";
import { childConfig, send, serve } from "./support.ts";

export type GraphileProcessConfig = { connectionString: string; concurrency: number; tuned: boolean };

const config = childConfig<GraphileProcessConfig>();
const logger = new Logger(() => () => {});
let runner: Runner | undefined;

/** https://worker.graphile.org/docs/performance: a local queue, batched completions, a pool ≥ concurrency. */
function workerPreset(): GraphileConfig.WorkerOptions {
  const base = { connectionString: config.connectionString, concurrentJobs: config.concurrency, logger };
  if (!config.tuned) return base;
  return {
    ...base,
    maxPoolSize: config.concurrency + 2,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  };
}

serve({
  go: async () => {
    runner = await run({ preset: { worker: workerPreset() }, taskList: { noop: async () => {} }, noHandleSignals: true, logger });
  },
  stop: async () => {
    await runner?.stop();
    process.exit(0);
  },
});
send({ type: "ready" });
