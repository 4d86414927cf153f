// Scenario 10 (not one of the issue's): the database's share of a job as ended history piles up,
// on PGlite in a data directory (what `jobfleet start` runs, and where nothing but the coordinator
// vacuums). Rounds of work orders are enqueued in bulk, claimed 20 at a time and ended in batches,
// through the coordinator's own statements, in this process; the wake-ups it would announce go to
// a bus. Once with the coordinator's vacuum listening on that bus, once without.
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setImmediate } from "node:timers/promises";
import { Bus } from "../coordinator/bus.ts";
import { type Database, openDatabase } from "../coordinator/db/database.ts";
import { agentConnect } from "../coordinator/sql/agent-session.ts";
import { jobApplyIn } from "../coordinator/sql/job-apply.ts";
import { workOrdersClaim } from "../coordinator/sql/work-order-claim.ts";
import { workOrderInsertMany } from "../coordinator/sql/work-order-insert.ts";
import { Statistics } from "../coordinator/statistics.ts";
import { Vacuum } from "../coordinator/vacuum.ts";
import { workOrderCreate } from "../protocol/api.ts";
import { now } from "./support.ts";

const CLAIM = 20;
const ORDER = workOrderCreate.parse({ spec: { command: ["true"] }, selector: "pool=history" });

/** µs of database time a job took in each round (its claim, and the batch that ended it), and of that its claim's; the data directory's bytes at the end. */
export type History = { rounds: number[]; claims: number[]; vacuums: number; bytes: number };

export async function history(rounds: number, perRound: number, vacuuming: boolean): Promise<History> {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-bench-history-"));
  const db = await openDatabase({ kind: "pglite", dataDir: dir });
  const bus = new Bus();
  const fail = (error: unknown) => {
    throw error;
  };
  const upkeep = [new Statistics(db, bus, fail), ...(vacuuming ? [new Vacuum(db, bus, fail)] : [])];
  try {
    const agent = (await agentConnect(db, { name: "history", labels: { pool: "history" }, capacity: CLAIM, mode: "queue", version: "bench" }, "bench"))!;
    const perJob: number[] = [];
    const claims: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const { created } = await workOrderInsertMany(db, Array.from({ length: perRound }, () => ORDER));
      bus.emit("enqueued", created);
      const start = now();
      let claiming = 0;
      // A turn of the event loop between claims, as the coordinator's sockets make: PGlite answers
      // without one, and the upkeep's timers would wait for the end.
      for (let done = 0; done < perRound; await setImmediate()) {
        const claimed = await claimAndEnd(db, bus, agent.id);
        done += claimed.jobs;
        claiming += claimed.claimMs;
      }
      perJob.push(((now() - start) * 1000) / perRound);
      claims.push((claiming * 1000) / perRound);
    }
    const [row] = await db.query<{ n: number }>("SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = 'work_orders'");
    return { rounds: perJob, claims, vacuums: row?.n ?? 0, bytes: sizeOf(dir) };
  } finally {
    for (const part of upkeep) await part.stop();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function sizeOf(path: string): number {
  const stat = statSync(path);
  return stat.isDirectory() ? readdirSync(path).reduce((sum, name) => sum + sizeOf(join(path, name)), 0) : stat.size;
}

async function claimAndEnd(db: Database, bus: Bus, agentId: string): Promise<{ jobs: number; claimMs: number }> {
  const start = now();
  const jobs = await workOrdersClaim(db.generic, { labels: { pool: "history" }, queueMode: true }, [{ agentId, name: "history", want: CLAIM }]);
  for (const job of jobs) bus.emit("changed", job.workOrderId);
  const claimMs = now() - start;
  const messages = jobs.flatMap(({ jobId }) => [
    { agentId, message: { type: "job.starting" as const, jobId, seq: 1 } },
    { agentId, message: { type: "job.started" as const, jobId, seq: 2 } },
    { agentId, message: { type: "job.finished" as const, jobId, seq: 3, outcome: "succeeded" as const, exitCode: 0 } },
  ]);
  await db.transaction((tx) => jobApplyIn(tx, messages));
  for (const job of jobs) bus.emit("changed", job.workOrderId);
  return { jobs: jobs.length, claimMs };
}
