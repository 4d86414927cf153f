// Scenario 3: enqueue through the HTTP API, single POSTs from many concurrent clients and bulk
// requests of 10,000; no agents. Peers in the same run: graphile-worker's addJob from as many
// concurrent clients (a pool of that size) and addJobs with 10,000 per call, on a fresh database.
// Each way is warmed up before it is timed: 200 singles, one bulk request or call.
import { Logger, makeWorkerUtils, runMigrations } from "graphile-worker";
import { BULK_SIZE, CoordinatorProcess, NOOP_ORDER } from "./fleet.ts";
import { createDatabase, dropDatabase, now } from "./support.ts";

export type EnqueueResult = {
  singlesPerSecond: number;
  bulkPerSecond?: number;
  graphileSinglesPerSecond: number;
  graphileBulkPerSecond: number;
};

export async function enqueueScenario(singles: number, bulk: number, clients: number): Promise<EnqueueResult> {
  const jobfleet = await jobfleetEnqueue(singles, bulk, clients);
  const graphile = await graphileEnqueue(singles, bulk, clients);
  return { ...jobfleet, graphileSinglesPerSecond: graphile.singlesPerSecond, graphileBulkPerSecond: graphile.bulkPerSecond };
}

async function jobfleetEnqueue(singles: number, bulk: number, clients: number) {
  const url = await createDatabase("enq");
  const coordinator = await CoordinatorProcess.start({ kind: "postgres", url });
  try {
    const api = coordinator.api;
    await api.enqueueConcurrently(NOOP_ORDER, 200, clients); // warm-up: connections, JIT
    let start = now();
    await api.enqueueConcurrently(NOOP_ORDER, singles, clients);
    const singlesPerSecond = singles / ((now() - start) / 1000);
    if (!(await api.hasBulk())) return { singlesPerSecond };
    await api.enqueueBulk(NOOP_ORDER, BULK_SIZE); // warm-up, as for the singles
    start = now();
    await api.enqueueBulk(NOOP_ORDER, bulk);
    return { singlesPerSecond, bulkPerSecond: bulk / ((now() - start) / 1000) };
  } finally {
    await coordinator.stop();
    await dropDatabase(url);
  }
}

async function graphileEnqueue(singles: number, bulk: number, clients: number) {
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
    let start = now();
    await concurrently(singles);
    const singlesPerSecond = singles / ((now() - start) / 1000);
    const addJobs = (count: number) => utils.addJobs(Array.from({ length: count }, () => spec));
    await addJobs(BULK_SIZE);
    start = now();
    for (let done = 0; done < bulk; done += BULK_SIZE) await addJobs(Math.min(BULK_SIZE, bulk - done));
    return { singlesPerSecond, bulkPerSecond: bulk / ((now() - start) / 1000) };
  } finally {
    await utils.release();
    await dropDatabase(url);
  }
}
