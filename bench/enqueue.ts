// Scenario 3: enqueue through the HTTP API, single POSTs from many concurrent clients and bulk
// requests of 10,000; no agents. Peers in the same run: graphile-worker's addJob from as many
// concurrent clients (a pool of that size) and addJobs with 10,000 per call, on a fresh database.
// Each way is warmed up (200 singles, one bulk request or call), then timed twice in a row: a
// fresh process runs its first pass while V8 still compiles its hot code, and the next on code
// compiled (a coordinator's first 10,000 singles cost it about 1.5 times the CPU of the 10,000 after).
// graphile-worker runs in this process, which earlier scenarios may have warmed: the next pass is
// the fair comparison.
import { Logger, makeWorkerUtils, runMigrations } from "graphile-worker";
import { BULK_SIZE, CoordinatorProcess, NOOP_ORDER } from "./fleet.ts";
import { postgresCpuSeconds, processCpuSeconds } from "./cpu.ts";
import { createDatabase, dropDatabase, now } from "./support.ts";

/** CPU µs an order of the coordinator process and of the whole Postgres server, in a pass. */
export type OrderCpu = { coordinator: number; postgres: number };

/**
 * Rates of one way of enqueueing: its first timed pass after the warm-up, and the pass after it;
 * for jobfleet's, what the next pass cost the coordinator and Postgres.
 */
export type Passes = { first: number; next: number; nextCpu?: OrderCpu };

export type EnqueueResult = { singles: Passes; bulk?: Passes; graphileSingles: Passes; graphileBulk: Passes };

export async function enqueueScenario(singles: number, bulk: number, clients: number): Promise<EnqueueResult> {
  const jobfleet = await jobfleetEnqueue(singles, bulk, clients);
  const graphile = await graphileEnqueue(singles, bulk, clients);
  return { ...jobfleet, graphileSingles: graphile.singles, graphileBulk: graphile.bulk };
}

/** `count` per second through `pass`, twice in a row; with `coordinatorPid`, the next pass's CPU too. */
async function timedPasses(count: number, pass: (count: number) => Promise<unknown>, coordinatorPid?: number): Promise<Passes> {
  const rate = async () => {
    const start = now();
    await pass(count);
    return count / ((now() - start) / 1000);
  };
  const first = await rate();
  if (coordinatorPid === undefined) return { first, next: await rate() };
  const before = { coordinator: processCpuSeconds(coordinatorPid), postgres: postgresCpuSeconds() };
  const next = await rate();
  const perOrder = (seconds: number) => (seconds * 1e6) / count;
  const nextCpu = { coordinator: perOrder(processCpuSeconds(coordinatorPid) - before.coordinator), postgres: perOrder(postgresCpuSeconds() - before.postgres) };
  return { first, next, nextCpu };
}

async function jobfleetEnqueue(singles: number, bulk: number, clients: number): Promise<Pick<EnqueueResult, "singles" | "bulk">> {
  const url = await createDatabase("enq");
  const coordinator = await CoordinatorProcess.start({ kind: "postgres", url });
  try {
    const api = coordinator.api;
    await api.enqueueConcurrently(NOOP_ORDER, 200, clients); // warm-up: connections
    const pid = coordinator.child.process.pid;
    const singlesPasses = await timedPasses(singles, (n) => api.enqueueConcurrently(NOOP_ORDER, n, clients), pid);
    if (!(await api.hasBulk())) return { singles: singlesPasses };
    await api.enqueueBulk(NOOP_ORDER, BULK_SIZE);
    return { singles: singlesPasses, bulk: await timedPasses(bulk, (n) => api.enqueueBulk(NOOP_ORDER, n), pid) };
  } finally {
    await coordinator.stop();
    await dropDatabase(url);
  }
}

async function graphileEnqueue(singles: number, bulk: number, clients: number): Promise<{ singles: Passes; bulk: Passes }> {
  const url = await createDatabase("genq");
  const logger = new Logger(() => () => {});
  await runMigrations({ connectionString: url, logger });
  const utils = await makeWorkerUtils({ connectionString: url, logger, maxPoolSize: clients });
  try {
    const spec = { identifier: "noop", payload: {} };
    const concurrently = async (count: number) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: clients }, async () => {
          while (next < count) {
            next++;
            await utils.addJob("noop", {});
          }
        }),
      );
    };
    await concurrently(200);
    const singlesPasses = await timedPasses(singles, concurrently);
    const addJobs = (count: number) => utils.addJobs(Array.from({ length: count }, () => spec));
    await addJobs(BULK_SIZE);
    const inBulk = async (count: number) => {
      for (let done = 0; done < count; done += BULK_SIZE) await addJobs(Math.min(BULK_SIZE, count - done));
    };
    return { singles: singlesPasses, bulk: await timedPasses(bulk, inBulk) };
  } finally {
    await utils.release();
    await dropDatabase(url);
  }
}
