// Scenario 7, replicas: scenario 1 (N no-op work orders enqueued in bulk, worked by 4 agent
// processes × 25 agents of capacity 1) run twice on fresh databases of the same Postgres server:
// once against one coordinator process, once against two that share the database (agent process p
// dials coordinator p mod 2; they wake each other through LISTEN/NOTIFY). The target is two ≥ 1.5×
// one, which only a coordinator-bound run can reach; the note says which party bounds it, from
// each party's CPU during the working phase (cores busy = CPU s per job × jobs/s).
import { availableParallelism } from "node:os";
import { type Row, ratio } from "./table.ts";
import type { FleetShape } from "./fleet.ts";
import { type ThroughputResult, jobfleetThroughput } from "./throughput.ts";

/** The same fleet as scenario 1 (bench/main.ts). */
const FLEET: FleetShape = { processes: 4, perProcess: 25, capacity: 1 };
const TARGET = 1.5;
/** A coordinator process (single-threaded Node) at or above this share of a core counts as saturated. */
const SATURATED = 0.85;
/**
 * The machine counts as full when the three parties alone keep this share of its cores busy: the
 * rest goes to what they do not count (the bench's own process and polls, the kernel's loopback
 * work, anything else running).
 */
const MACHINE_FULL = 0.75;

/** The rows, plus notes for the table (which party bounds it, anything that went wrong). Usable as plain `Row[]`. */
export type ReplicaRows = Row[] & { notes: string[] };

type Busy = { coordinators: number; perCoordinator: number; agents: number; postgres: number; total: number; commitsPerJob: number; commitsPerSecond: number };

/** Cores each party kept busy on average while the backlog was worked, and the database's commit rate. */
function busy(result: ThroughputResult, coordinators: number): Busy {
  const cores = (perThousand: number | undefined) => ((perThousand ?? 0) * result.jobsPerSecond) / 1000;
  const b = { coordinators: cores(result.cpuPerThousand.coordinator), agents: cores(result.cpuPerThousand.agents), postgres: cores(result.cpuPerThousand.postgres) };
  return {
    ...b,
    perCoordinator: b.coordinators / coordinators,
    total: b.coordinators + b.agents + b.postgres,
    commitsPerJob: result.commitsPerJob ?? NaN,
    commitsPerSecond: (result.commitsPerJob ?? NaN) * result.jobsPerSecond,
  };
}

const c = (n: number) => n.toFixed(2);

function describe(label: string, result: ThroughputResult, b: Busy, coordinators: number): string {
  const per = coordinators > 1 ? ` (${c(b.perCoordinator)} each)` : "";
  return (
    `${label}: ${Math.round(result.jobsPerSecond)} jobs/s, ${c(b.commitsPerJob)} commits/job = ${Math.round(b.commitsPerSecond)} commits/s; ` +
    `cores busy: coordinator${coordinators > 1 ? "s" : ""} ${c(b.coordinators)}${per}, agents ${c(b.agents)}, Postgres ${c(b.postgres)}, sum ${c(b.total)}`
  );
}

/** Which party bounds the runs: judged from the one-coordinator run, checked against the two-coordinator run. */
function bound(one: Busy, two: Busy, speedup: number, cores: number): string {
  const parties = [
    ["the coordinator", one.coordinators],
    ["the agents", one.agents],
    ["Postgres", one.postgres],
  ] as const;
  const largest = [...parties].sort((a, b) => b[1] - a[1])[0]!;
  const verdict = `target ≥ ${TARGET}× ${speedup >= TARGET ? "met" : "not met"}: ${speedup.toFixed(2)}×`;
  if (one.total >= MACHINE_FULL * cores) {
    // Everything shares this machine: with its cores already busy, a second coordinator adds no CPU.
    const coordinatorFull = one.perCoordinator >= SATURATED;
    return (
      `Bound: this machine's ${cores} cores, nearly all busy already with one coordinator (the parties use ${c(one.total)} of ${cores}); ` +
      `the largest share is ${largest[0]}'s (${c(largest[1])} cores)` +
      (largest[0] === "Postgres" ? ", so the database, not the coordinator, is the limit" : "") +
      `, and the coordinator process itself is ${coordinatorFull ? "at" : "below"} a full core (${c(one.perCoordinator)}). ` +
      `A second coordinator on the same machine cannot help: it can only take CPU from the agents and Postgres` +
      (coordinatorFull ? "; on a host of its own it could" : "") +
      ` (${verdict})`
    );
  }
  if (one.perCoordinator >= SATURATED) {
    return (
      `Bound: the coordinator (its one Node process at ${c(one.perCoordinator)} of a core, the machine at ${c(one.total)} of ${cores}); ` +
      `a second coordinator has room to help (${verdict}; two at ${c(two.perCoordinator)} cores each, machine ${c(two.total)})`
    );
  }
  return (
    `Bound: not CPU (the coordinator uses ${c(one.perCoordinator)} of its core, Postgres ${c(one.postgres)} cores, the parties ${c(one.total)} of ${cores}), ` +
    `so a second coordinator has no CPU limit to lift. The jobs wait on round trips and commits (a claim waits for its WAL flush), ` +
    `i.e. on the database's side, and commits/s moved from ${Math.round(one.commitsPerSecond)} to ${Math.round(two.commitsPerSecond)} ` +
    `while commits per job rose ${c(two.commitsPerJob / one.commitsPerJob)}× (each coordinator batches claims for its own agents only) (${verdict})`
  );
}

export async function replicas(n: number): Promise<ReplicaRows> {
  process.stderr.write(`replicas: ${n} no-op jobs, ${FLEET.processes}×${FLEET.perProcess} agents, against one coordinator, then two on the same database\n`);
  const one = await jobfleetThroughput({ kind: "postgres", orders: n, fleet: FLEET, coordinators: 1 });
  const two = await jobfleetThroughput({ kind: "postgres", orders: n, fleet: FLEET, coordinators: 2 });
  const speedup = two.jobsPerSecond / one.jobsPerSecond;
  const cores = availableParallelism();
  const busyOne = busy(one, 1);
  const busyTwo = busy(two, 2);

  const rows: Row[] = [
    { scenario: `7 replicas, one coordinator, N=${n}`, figure: one.jobsPerSecond, unit: "jobs/s" },
    { scenario: `7 replicas, two coordinators, N=${n}`, figure: two.jobsPerSecond, unit: "jobs/s", ratio: ratio(two.jobsPerSecond, one.jobsPerSecond, "one coordinator") },
    { scenario: "7 CPU per 1k jobs, one coordinator", figure: one.cpuPerThousand.coordinator, unit: "CPU s" },
    { scenario: "7 CPU per 1k jobs, two coordinators (sum)", figure: two.cpuPerThousand.coordinator, unit: "CPU s", ratio: ratio(two.cpuPerThousand.coordinator, one.cpuPerThousand.coordinator, "one") },
    { scenario: "7 CPU per 1k jobs, agents under one coordinator", figure: one.cpuPerThousand.agents, unit: "CPU s" },
    { scenario: "7 CPU per 1k jobs, agents under two coordinators", figure: two.cpuPerThousand.agents, unit: "CPU s", ratio: ratio(two.cpuPerThousand.agents, one.cpuPerThousand.agents, "one") },
    { scenario: "7 CPU per 1k jobs, Postgres under one coordinator", figure: one.cpuPerThousand.postgres!, unit: "CPU s" },
    { scenario: "7 CPU per 1k jobs, Postgres under two coordinators", figure: two.cpuPerThousand.postgres!, unit: "CPU s", ratio: ratio(two.cpuPerThousand.postgres!, one.cpuPerThousand.postgres!, "one") },
    { scenario: "7 commits per job, one coordinator", figure: one.commitsPerJob!, unit: "commits/job" },
    { scenario: "7 commits per job, two coordinators", figure: two.commitsPerJob!, unit: "commits/job", ratio: ratio(two.commitsPerJob!, one.commitsPerJob!, "one") },
  ];
  const notes = [
    `replicas: ${describe("one coordinator", one, busyOne, 1)}. ${describe("two coordinators", two, busyTwo, 2)}. ` +
      `Every party shares this machine (${cores} cores; Postgres counted as every postgres process on it, whatever database it serves). ` +
      `${bound(busyOne, busyTwo, speedup, cores)}.`,
  ];
  if (one.unsucceeded > 0) notes.push(`replicas: ${one.unsucceeded} work orders did not end succeeded with one coordinator`);
  if (two.unsucceeded > 0) notes.push(`replicas: ${two.unsucceeded} work orders did not end succeeded with two coordinators`);
  if (!one.enqueue.bulk) notes.push("replicas: the coordinator has no bulk endpoint; enqueued with single POSTs");
  return Object.assign(rows, { notes });
}
