// Scenario 1/2's peer: graphile-worker 0.17.3 works the same number of no-op jobs on the same
// Postgres server (a fresh database) with the same total concurrency, enqueued in bulk beforehand
// (addJobs, 10,000 per call). Timed from `go` (the runner starting) until the jobs table is empty,
// looked for as often as jobfleet's run looks for its end.
import { Logger, makeWorkerUtils, runMigrations } from "graphile-worker";
import postgres from "postgres";
import { postgresCpuSeconds, processCpuSeconds } from "./cpu.ts";
import { processWrites } from "./writes.ts";
import { BULK_SIZE } from "./fleet.ts";
import type { GraphileProcessConfig } from "./graphile-process.ts";
import { Child } from "./children.ts";
import { POLL_MS } from "./throughput.ts";
import { checkpoint, commits, createDatabase, dropDatabase, now, sleep, walBytes } from "./support.ts";

export type GraphileResult = {
  jobs: number;
  seconds: number;
  jobsPerSecond: number;
  commitsPerJob: number;
  /** WAL bytes written per job during the working phase. */
  walPerJob: number;
  /** Bulk enqueue through addJobs, jobs/s. */
  enqueuePerSecond: number;
  cpuPerThousand: { worker: number; postgres: number };
  /** The worker process's write calls per job (to the database). */
  workerWritesPerJob: number;
};

const logger = new Logger(() => () => {});

export async function graphileThroughput(jobs: number, concurrency: number, tuned: boolean): Promise<GraphileResult> {
  const url = await createDatabase(tuned ? "gwt" : "gw");
  let child: Child | undefined;
  const monitor = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} });
  let monitorQueries = 0;
  try {
    await runMigrations({ connectionString: url, logger });
    const utils = await makeWorkerUtils({ connectionString: url, logger });
    const enqueueStart = now();
    for (let done = 0; done < jobs; done += BULK_SIZE) {
      const n = Math.min(BULK_SIZE, jobs - done);
      await utils.addJobs(Array.from({ length: n }, () => ({ identifier: "noop", payload: {} })));
    }
    const enqueueMs = now() - enqueueStart;
    await utils.release();

    child = new Child("graphile-process", { connectionString: url, concurrency, tuned } satisfies GraphileProcessConfig);
    await child.next("ready");
    await checkpoint();
    const before = await commits(url);
    const cpuBefore = { worker: processCpuSeconds(child.process.pid), postgres: postgresCpuSeconds() };
    const walBefore = await walBytes();
    const writesBefore = processWrites(child.process.pid);

    const start = now();
    child.send({ type: "go" });
    const deadline = Date.now() + Math.max(120_000, jobs * 20);
    // Through the primary key, not a count: a scan of the table would be load on what is measured.
    for (;;) {
      monitorQueries++;
      const rows = await monitor.unsafe(`SELECT 1 FROM graphile_worker._private_jobs ORDER BY id LIMIT 1`);
      if (rows.length === 0) break;
      if (Date.now() > deadline) throw new Error(`graphile: jobs left after the deadline`);
      await sleep(POLL_MS);
    }
    const seconds = (now() - start) / 1000;
    const cpu = { worker: (processCpuSeconds(child.process.pid)) - cpuBefore.worker, postgres: postgresCpuSeconds() - cpuBefore.postgres };
    const wal = (await walBytes()) - walBefore;
    const writes = processWrites(child.process.pid) - writesBefore;

    await child.stop();
    await monitor.end();
    const after = await commits(url);
    return {
      jobs,
      seconds,
      jobsPerSecond: jobs / seconds,
      commitsPerJob: (after - before - monitorQueries) / jobs,
      walPerJob: wal / jobs,
      enqueuePerSecond: jobs / (enqueueMs / 1000),
      cpuPerThousand: { worker: (cpu.worker * 1000) / jobs, postgres: (cpu.postgres * 1000) / jobs },
      workerWritesPerJob: writes / jobs,
    };
  } finally {
    await child?.stop();
    await monitor.end();
    await dropDatabase(url);
  }
}
