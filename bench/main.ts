// npm run bench [-- --quick] [-- --only throughput,enqueue,latency,fleet,logs,replicas,embedded,bodies,history]
// Runs the scenarios in order and prints one table (figures only; nothing is asserted).
// Every database and child process it starts is dropped or stopped at the end, also on Ctrl-C.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { bodyStalls } from "./bodies.ts";
import { enqueueScenario, type Passes } from "./enqueue.ts";
import { graphileThroughput } from "./graphile.ts";
import { fleetSize } from "./fleet-size.ts";
import { type History, history } from "./history.ts";
import { idleLatency } from "./latency.ts";
import { logScenario } from "./logs.ts";
import { replicas } from "./replicas.ts";
import { type Row, ratio, Table } from "./table.ts";
import type { FleetShape } from "./fleet.ts";
import { standInThroughput } from "./stand-in.ts";
import { jobfleetThroughput } from "./throughput.ts";
import { buildChildren, killAll } from "./children.ts";
import { dropAll, percentile, serverSettings } from "./support.ts";

const { values } = parseArgs({
  options: { quick: { type: "boolean", default: false }, only: { type: "string" } },
  allowPositionals: false,
});
const quick = values.quick!;
const SCENARIOS = ["throughput", "enqueue", "latency", "fleet", "logs", "replicas", "embedded", "bodies", "history"] as const;
const only = new Set(values.only ? values.only.split(",") : SCENARIOS);
for (const name of only) if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`unknown scenario ${name}; one of ${SCENARIOS.join(", ")}`);

const sizes = quick
  ? { throughput: 2_000, embedded: 1_000, singles: 1_000, bulk: 20_000, idleProbes: 100, loadOrders: 1_000, historyRounds: 3, historyRound: 2_000 }
  : { throughput: 50_000, embedded: 50_000, singles: 10_000, bulk: 50_000, idleProbes: 1_000, loadOrders: 50_000, historyRounds: 10, historyRound: 20_000 };
/** Under load, a probe every this many ms: hundreds of samples in a full run, about 1% of its jobs. */
const PROBE_EVERY_MS = 10;
/** 100 agents of capacity 1 over 4 agent processes: total concurrency 100, as graphile-worker's. */
const FLEET: FleetShape = { processes: 4, perProcess: 25, capacity: 1 };
const CONCURRENCY = FLEET.processes * FLEET.perProcess * FLEET.capacity;
/** The same agents each holding 5 jobs ahead: 500 in all, the size of graphile-worker tuned's local queue. */
const PREFETCH_FLEET: FleetShape = { ...FLEET, prefetch: 5 };
const PREFETCH = `prefetch ${PREFETCH_FLEET.prefetch}`;

const table = new Table();
const latencyRows = (scenario: string, sorted: number[]): Row[] =>
  ([50, 90, 99] as const).map((p) => ({ scenario: `${scenario} p${p}`, figure: percentile(sorted, p), unit: "ms" }));

const versusGraphile = (ours: number, defaults: number, tuned: number) =>
  `${ratio(ours, defaults, "graphile defaults")}; ${ratio(ours, tuned, "graphile tuned")}`;

/** jobfleet's figure, with its ratio to graphile-worker's two runs, then theirs. */
function againstGraphile(scenario: string, unit: string, ours: number, defaults: number, tuned: number): void {
  table.add({ scenario: `${scenario}, jobfleet`, figure: ours, unit, ratio: versusGraphile(ours, defaults, tuned) });
  table.add({ scenario: `${scenario}, graphile-worker defaults`, figure: defaults, unit });
  table.add({ scenario: `${scenario}, graphile-worker tuned`, figure: tuned, unit });
}

async function throughput(): Promise<void> {
  const n = sizes.throughput;
  process.stderr.write(
    `throughput: ${n} no-op jobs, jobfleet (${FLEET.processes}×${FLEET.perProcess} agents, capacity ${FLEET.capacity}; then ${PREFETCH}; then both against a stand-in coordinator) vs graphile-worker (concurrency ${CONCURRENCY})\n`,
  );
  const jf = await jobfleetThroughput({ kind: "postgres", orders: n, fleet: FLEET });
  const jfAhead = await jobfleetThroughput({ kind: "postgres", orders: n, fleet: PREFETCH_FLEET });
  const floor = await standInThroughput(n, FLEET);
  const floorAhead = await standInThroughput(n, PREFETCH_FLEET);
  const ours = [["", jf], [`, ${PREFETCH}`, jfAhead]] as const;
  const floors = [["", floor], [`, ${PREFETCH}`, floorAhead]] as const;
  const gDefault = await graphileThroughput(n, CONCURRENCY, false);
  const gTuned = await graphileThroughput(n, CONCURRENCY, true);
  for (const [label, run] of ours) {
    table.add({
      scenario: `1 throughput jobfleet${label}, Postgres, N=${n}`,
      figure: run.jobsPerSecond,
      unit: "jobs/s",
      ratio: versusGraphile(run.jobsPerSecond, gDefault.jobsPerSecond, gTuned.jobsPerSecond),
    });
  }
  for (const [label, run] of floors) {
    table.add({
      scenario: `1 throughput, the same agents against a stand-in coordinator (no database)${label}, N=${n}`,
      figure: run.jobsPerSecond,
      unit: "jobs/s",
      ratio: versusGraphile(run.jobsPerSecond, gDefault.jobsPerSecond, gTuned.jobsPerSecond),
    });
  }
  table.add({ scenario: `1 throughput graphile-worker defaults, N=${n}`, figure: gDefault.jobsPerSecond, unit: "jobs/s" });
  table.add({ scenario: `1 throughput graphile-worker tuned, N=${n}`, figure: gTuned.jobsPerSecond, unit: "jobs/s" });
  againstGraphile("2 commits per job", "commits/job", jf.commitsPerJob!, gDefault.commitsPerJob, gTuned.commitsPerJob);
  table.add({ scenario: `2 commits per job, jobfleet ${PREFETCH}`, figure: jfAhead.commitsPerJob!, unit: "commits/job" });
  againstGraphile("2 WAL per job", "bytes/job", jf.walPerJob!, gDefault.walPerJob, gTuned.walPerJob);
  for (const [label, run] of ours) {
    table.add({ scenario: `2 CPU per 1k jobs, jobfleet coordinator${label}`, figure: run.cpuPerThousand.coordinator, unit: "CPU s" });
    table.add({ scenario: `2 CPU per 1k jobs, jobfleet agents (4 processes)${label}`, figure: run.cpuPerThousand.agents, unit: "CPU s" });
    table.add({
      scenario: `2 CPU per 1k jobs, Postgres under jobfleet${label}`,
      figure: run.cpuPerThousand.postgres!,
      unit: "CPU s",
      ratio: versusGraphile(run.cpuPerThousand.postgres!, gDefault.cpuPerThousand.postgres, gTuned.cpuPerThousand.postgres),
    });
  }
  for (const [label, run] of floors) {
    table.add({ scenario: `2 CPU per 1k jobs, agents (4 processes) against the stand-in${label}`, figure: run.cpuPerThousand.agents, unit: "CPU s" });
    table.add({ scenario: `2 CPU per 1k jobs, the stand-in coordinator${label}`, figure: run.cpuPerThousand.standIn, unit: "CPU s" });
  }
  table.add({ scenario: "2 CPU per 1k jobs, graphile-worker process (defaults)", figure: gDefault.cpuPerThousand.worker, unit: "CPU s" });
  table.add({ scenario: "2 CPU per 1k jobs, graphile-worker process (tuned)", figure: gTuned.cpuPerThousand.worker, unit: "CPU s" });
  table.add({ scenario: "2 CPU per 1k jobs, Postgres under graphile defaults", figure: gDefault.cpuPerThousand.postgres, unit: "CPU s" });
  table.add({ scenario: "2 CPU per 1k jobs, Postgres under graphile tuned", figure: gTuned.cpuPerThousand.postgres, unit: "CPU s" });
  // The process that hands out the jobs: jobfleet's coordinator, graphile-worker's worker.
  againstGraphile("2 write calls per job", "writes/job", jf.coordinatorWritesPerJob, gDefault.workerWritesPerJob, gTuned.workerWritesPerJob);
  table.add({ scenario: `2 write calls per job, jobfleet ${PREFETCH}`, figure: jfAhead.coordinatorWritesPerJob, unit: "writes/job" });
  for (const [label, run] of ours) {
    table.add({ scenario: `2 write calls per job, jobfleet agents (4 processes)${label}`, figure: run.agentWritesPerJob, unit: "writes/job" });
  }
  for (const [label, run] of floors) {
    table.add({ scenario: `2 write calls per job, agents (4 processes) against the stand-in${label}`, figure: run.agentWritesPerJob, unit: "writes/job" });
  }
  for (const run of [jf, jfAhead]) if (run.unsucceeded > 0) table.note(`throughput: ${run.unsucceeded} jobfleet work orders did not end succeeded`);
  if (!jf.enqueue.bulk) table.note("throughput: the coordinator has no bulk endpoint; enqueued with single POSTs");
  table.note(`throughput: enqueue before the timed phase took ${(jf.enqueue.ms / 1000).toFixed(1)} s for jobfleet (${jf.enqueue.bulk ? "bulk" : "single POSTs"}), graphile addJobs ${(n / gDefault.enqueuePerSecond).toFixed(1)} s`);
}

async function enqueue(): Promise<void> {
  process.stderr.write(`enqueue: ${sizes.singles} single POSTs from 64 clients, ${sizes.bulk} in bulk requests of 10,000, each timed twice\n`);
  const result = await enqueueScenario(sizes.singles, sizes.bulk, 64);
  const passes = (what: string, peer: { row: string; ratio: string }, count: number, ours: Passes, theirs: Passes) => {
    const label = (pass: keyof Passes) => `${pass} ${count.toLocaleString("en-US")}`;
    for (const pass of ["first", "next"] as const) {
      table.add({ scenario: `3 enqueue ${what}, ${label(pass)}`, figure: ours[pass], unit: "orders/s", ratio: ratio(ours[pass], theirs[pass], peer.ratio) });
    }
    for (const pass of ["first", "next"] as const) table.add({ scenario: `3 enqueue ${peer.row}, ${label(pass)}`, figure: theirs[pass], unit: "jobs/s" });
    if (!ours.nextCpu) return;
    const { coordinator, postgres } = ours.nextCpu;
    table.add({ scenario: `3 CPU an order, ${what}, next pass, coordinator`, figure: coordinator, unit: "µs" });
    table.add({ scenario: `3 CPU an order, ${what}, next pass, Postgres`, figure: postgres, unit: "µs", ratio: ratio(postgres, coordinator, "the coordinator") });
  };
  const addJob = { row: "graphile addJob, 64 clients (pool 64)", ratio: "graphile addJob, 64 clients, same pass" };
  passes("single POST, 64 clients", addJob, sizes.singles, result.singles, result.graphileSingles);
  const addJobs = { row: "graphile addJobs, 10,000 per call", ratio: "graphile addJobs ×10,000, same pass" };
  if (result.bulk) passes("bulk, 10,000 per request", addJobs, sizes.bulk, result.bulk, result.graphileBulk);
  else table.note("enqueue: the coordinator has no bulk endpoint yet; bulk not measured");
  table.note("enqueue: each way is timed twice in a row after its warm-up; the first pass runs while V8 still compiles the process's hot code");
}

async function latency(): Promise<void> {
  process.stderr.write(`latency: ${sizes.idleProbes} sequential probes on an idle fleet; probes every ${PROBE_EVERY_MS} ms while ${sizes.loadOrders} no-op jobs are worked\n`);
  const idle = await idleLatency(sizes.idleProbes, FLEET);
  for (const row of latencyRows(`4 latency enqueue→start, idle fleet (${sizes.idleProbes} orders)`, idle)) table.add(row);
  for (const [label, fleet] of [["", FLEET], [`, ${PREFETCH}`, PREFETCH_FLEET]] as const) {
    const { probes } = await jobfleetThroughput({ kind: "postgres", orders: sizes.loadOrders, fleet, probeEveryMs: PROBE_EVERY_MS });
    const { kept, fresh, opened } = probes;
    for (const row of latencyRows(`4 latency enqueue→start, under load${label} (${kept.latencies.length} probes, priority 1000)`, kept.latencies)) table.add(row);
    const fresher = `4 latency enqueue→start, under load${label}, each on a new connection (${fresh.latencies.length} probes)`;
    for (const row of latencyRows(fresher, fresh.latencies)) table.add(row);
    const answered = (sorted: number[]) => ([50, 90, 99] as const).map((p) => `p${p} ${percentile(sorted, p).toFixed(1)}`).join(", ");
    table.note(
      `latency under load${label}: of enqueue→start, the POST's answer took ${answered(kept.answers)} ms (${opened} of its probes found no kept connection free); on a new connection ${answered(fresh.answers)} ms`,
    );
  }
}

async function fleet(): Promise<void> {
  process.stderr.write("fleet: idle agents on one coordinator, as many as its open-files limit allows\n");
  for (const row of await fleetSize({ quick, note: (text) => table.note(text) })) table.add(row);
}

async function logs(): Promise<void> {
  process.stderr.write("logs: busy agents streaming output, and the delay from a printed line to the API\n");
  for (const row of await logScenario({ quick, note: (text) => table.note(text) })) table.add(row);
}

async function replicaScenario(): Promise<void> {
  process.stderr.write("replicas: the throughput scenario with one coordinator, then two\n");
  const rows = await replicas(sizes.throughput);
  for (const row of rows) table.add(row);
  for (const note of rows.notes) table.note(note);
}

/** On disk, as `jobfleet start` runs; the full run also in memory, for the ratio (the quick run saves the second PGlite's start-up). */
async function embedded(): Promise<void> {
  const n = sizes.embedded;
  process.stderr.write(`embedded: ${n} no-op jobs on PGlite, in a data directory (what \`jobfleet start\` uses)${quick ? "" : " and in memory"}\n`);
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-bench-pglite-"));
  try {
    const onDisk = await jobfleetThroughput({ kind: "pglite", dataDir: dir, orders: n, fleet: FLEET });
    table.add({ scenario: `8 throughput jobfleet, PGlite in a data directory, N=${n}`, figure: onDisk.jobsPerSecond, unit: "jobs/s" });
    const runs = [onDisk];
    if (!quick) {
      const inMemory = await jobfleetThroughput({ kind: "pglite", orders: n, fleet: FLEET });
      table.add({ scenario: `8 throughput jobfleet, PGlite in memory, N=${n}`, figure: inMemory.jobsPerSecond, unit: "jobs/s", ratio: ratio(inMemory.jobsPerSecond, onDisk.jobsPerSecond, "on disk") });
      runs.push(inMemory);
    }
    table.add({ scenario: "8 CPU per 1k jobs, jobfleet coordinator (PGlite inside, on disk)", figure: onDisk.cpuPerThousand.coordinator, unit: "CPU s" });
    for (const result of runs) if (result.unsucceeded > 0) table.note(`embedded: ${result.unsucceeded} work orders did not end succeeded`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The same bodies in the quick run: each takes a second or so. */
async function bodies(): Promise<void> {
  process.stderr.write("bodies: built to be slow to parse, each POSTed while an unauthenticated GET is sent back to back\n");
  const stalls = await bodyStalls();
  const plain = stalls[0]!;
  for (const stall of stalls) {
    table.add({
      scenario: `9 longest wait of a probe, taking ${stall.name}`,
      figure: stall.longestProbeMs,
      unit: "ms",
      ...(stall !== plain && { ratio: ratio(stall.longestProbeMs, plain.longestProbeMs, "a plain bulk") }),
    });
  }
  table.note(`bodies: answered ${stalls.map((s) => `${s.status} to ${(s.bytes / 2 ** 20).toFixed(1)} MiB`).join(", ")} (0: the connection was reset)`);
}

/**
 * The last third of the rounds without the coordinator's vacuum against the first third, and with
 * it against without: means over thirds, as one round can vary by a fifth from the next.
 */
async function historyScenario(): Promise<void> {
  const { historyRounds: rounds, historyRound: perRound } = sizes;
  process.stderr.write(`history: ${rounds} rounds of ${perRound} work orders claimed and ended on PGlite in a data directory, without the coordinator's vacuum and with it\n`);
  await history(1, perRound / 10, false); // warm-up: the first round measured must not pay for JIT
  const without = await history(rounds, perRound, false);
  const vacuumed = await history(rounds, perRound, true);
  const third = Math.max(1, Math.floor(rounds / 3));
  const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;
  const [firsts, lasts] = [`first ${third * perRound}`, `last ${third * perRound} of ${rounds * perRound}`];
  const rows = [
    { name: "database µs a job", of: (run: History) => run.rounds },
    { name: "of which its claim", of: (run: History) => run.claims },
  ];
  for (const { name, of } of rows) {
    const [first, last, lastVacuumed] = [mean(of(without).slice(0, third)), mean(of(without).slice(-third)), mean(of(vacuumed).slice(-third))];
    table.add({ scenario: `10 ${name}, PGlite, ${firsts}`, figure: first, unit: "µs/job" });
    table.add({ scenario: `10 ${name}, PGlite, ${lasts}, not vacuumed`, figure: last, unit: "µs/job", ratio: ratio(last, first, "the first") });
    table.add({ scenario: `10 ${name}, PGlite, ${lasts}, the coordinator vacuuming`, figure: lastVacuumed, unit: "µs/job", ratio: ratio(lastVacuumed, last, "not vacuumed") });
  }
  const mib = (run: History) => run.bytes / 2 ** 20;
  table.add({ scenario: `10 data directory after ${rounds * perRound} jobs, not vacuumed`, figure: mib(without), unit: "MiB" });
  table.add({ scenario: `10 data directory after ${rounds * perRound} jobs, the coordinator vacuuming`, figure: mib(vacuumed), unit: "MiB", ratio: ratio(mib(vacuumed), mib(without), "not vacuumed") });
  for (const [name, run] of [["not vacuumed", without], ["the coordinator vacuuming", vacuumed]] as const) {
    const by = (values: number[]) => values.map((v) => v.toFixed(1)).join(", ");
    table.note(`history, ${name}: µs a job by round ${by(run.rounds)}, of which the claim ${by(run.claims)}; work_orders vacuumed ${run.vacuums} times`);
  }
}

const cleanup = async () => {
  await killAll();
  await dropAll();
};
process.once("SIGINT", () => void cleanup().then(() => process.exit(130)));
// graphile-worker's pg pools may still hold an idle connection when its bench database is dropped
// WITH (FORCE): the server's goodbye (57P01, admin shutdown) is expected then, not a failure.
process.on("uncaughtException", (error) => {
  if ((error as { code?: string }).code !== "57P01") throw error;
});

const started = Date.now();
const took: string[] = [];
try {
  await buildChildren();
  table.note(`Postgres: ${await serverSettings()}`);
  const scenarios: Record<(typeof SCENARIOS)[number], () => Promise<void>> = {
    throughput,
    enqueue,
    latency,
    fleet,
    logs,
    replicas: replicaScenario,
    embedded,
    bodies,
    history: historyScenario,
  };
  for (const name of SCENARIOS) {
    if (!only.has(name)) continue;
    const t0 = Date.now();
    await scenarios[name]();
    took.push(`${name} ${((Date.now() - t0) / 1000).toFixed(0)}`);
  }
} catch (error) {
  table.note(`stopped by an error: ${error instanceof Error ? error.stack : String(error)}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
table.note(`wall time ${((Date.now() - started) / 1000).toFixed(0)} s (${took.join(", ")} s)`);
console.log(table.render(quick ? "quick" : "full"));
