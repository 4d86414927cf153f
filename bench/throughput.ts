// Scenario 1/2/7/8 for jobfleet: N no-op work orders enqueued in bulk, then worked by a fleet of
// agents (several agent processes, real WebSockets on loopback, one coordinator process, or for 7
// several on the same Postgres database) until all have ended. Timed from the moment the agents
// dial until the last work order ended; the database's commits and each party's CPU are read
// around that working phase only.
import postgres from "postgres";
import { type AgentFleet, bootAgents, CoordinatorProcess, type FleetShape, NOOP_ORDER, PROBE_ORDER } from "./fleet.ts";
import { postgresCpuSeconds } from "./cpu.ts";
import { processWrites } from "./writes.ts";
import { checkpoint, commits, createDatabase, dropDatabase, now, sleep, walBytes } from "./support.ts";

export type ThroughputOptions = {
  kind: "postgres" | "pglite";
  /** PGlite: its data directory (default `:memory:`). */
  dataDir?: string;
  orders: number;
  fleet: FleetShape;
  /** Also enqueue a high-priority probe every this many ms while the backlog is worked (latency under load). */
  probeEveryMs?: number;
  /**
   * Coordinator processes on the same database (Postgres only; default 1). Agent process p dials
   * coordinator p mod n; work is enqueued (and probes sent) through the first; their CPU is summed.
   */
  coordinators?: number;
};

export type ThroughputResult = {
  orders: number;
  seconds: number;
  jobsPerSecond: number;
  /** Not ended `succeeded` (should be 0). */
  unsucceeded: number;
  enqueue: { bulk: boolean; ms: number };
  /** Postgres only: commits in the benchmark database during the working phase, per job. */
  commitsPerJob?: number;
  /** Postgres only: WAL bytes written per job during the working phase. */
  walPerJob?: number;
  /** CPU seconds per 1,000 jobs, by party (Postgres: the whole server; coordinator: all of them). */
  cpuPerThousand: { coordinator: number; agents: number; postgres?: number };
  /** The coordinators' write calls per job (to agents and to the database). */
  coordinatorWritesPerJob: number;
  /** The agent processes' write calls per job (to the coordinator), less their replies to the bench. */
  agentWritesPerJob: number;
  /** The probes on kept-alive connections, those each on a new connection, and how many of the first had to open one. */
  probes: { kept: ProbeTimes; fresh: ProbeTimes; opened: number };
};

/** Enqueue → adapter start, and enqueue → the POST's answer, of each probe, ms, sorted. */
export type ProbeTimes = { latencies: number[]; answers: number[] };

/** How often the run's end is looked for near it (a short wait, as graphile-worker's run's). */
export const POLL_MS = 10;
/** The longest wait between two looks at jobfleet's progress, far from the next mark. */
const MAX_POLL_MS = 200;
/** Probes go from when the fleet has started this share of the backlog (connecting is not load) until this one. */
const PROBES_FROM = 0.01;
const PROBES_UNTIL = 0.9;
// Asked only once the agents have started every job: each state's first row, through the (state, id)
// index for claimed and running (a scan of the pending, which are none by then).
const OPEN_STATES = ["pending", "claimed", "running"] as const;
const ANY_OPEN = `SELECT (${OPEN_STATES.map((s) => `EXISTS (SELECT 1 FROM work_orders WHERE state = '${s}' ORDER BY state, id LIMIT 1)`).join(" OR ")})::int AS n`;
const OPEN = `SELECT count(*)::int AS n FROM work_orders WHERE state IN (${OPEN_STATES.map((s) => `'${s}'`).join(", ")})`;
const UNSUCCEEDED = `SELECT count(*)::int AS n FROM work_orders WHERE state <> 'succeeded'`;

export async function jobfleetThroughput(options: ThroughputOptions): Promise<ThroughputResult> {
  const { kind, orders, fleet: shape } = options;
  const replicas = options.coordinators ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1) throw new RangeError(`coordinators: ${replicas}`);
  if (replicas > 1 && kind !== "postgres") throw new RangeError("several coordinators need a shared Postgres database");
  const booting = bootAgents(shape);
  const coordinators: CoordinatorProcess[] = [];
  const stopCoordinators = () => Promise.all(coordinators.map((c) => c.stop()));
  const coordinatorCpu = async () => (await Promise.all(coordinators.map((c) => c.usage()))).reduce((sum, u) => sum + u.cpu, 0);
  const coordinatorWrites = () => coordinators.reduce((sum, c) => sum + processWrites(c.child.process.pid), 0);
  let url: string | undefined;
  // Postgres: counted on a connection of our own, each poll one commit, subtracted below.
  let monitor: postgres.Sql | undefined;
  try {
    url = kind === "postgres" ? await createDatabase("jf") : undefined;
    // One at a time (they would migrate one at a time anyway).
    for (let i = 0; i < replicas; i++) coordinators.push(await CoordinatorProcess.start(url ? { kind: "postgres", url } : { kind: "pglite", dataDir: options.dataDir ?? ":memory:" }));
    const coordinator = coordinators[0]!;
    monitor = url ? postgres(url, { max: 1, fetch_types: false, onnotice: () => {} }) : undefined;
    let monitorQueries = 0;
    const count = async (sql: string): Promise<number> => {
      if (!monitor) return (await coordinator.query<{ n: number }>(sql))[0]!.n;
      monitorQueries++;
      return (await monitor.unsafe<{ n: number }[]>(sql))[0]!.n;
    };
    const enqueue = await coordinator.api.enqueueMany(NOOP_ORDER, orders);
    const agents = await booting.fleet;
    const probes = probing(coordinator, agents, options.probeEveryMs);
    if (url) await checkpoint();
    await probes.ready();
    const before = url ? await commits(url) : 0;
    const cpuBefore = { coordinator: await coordinatorCpu(), agents: agents.cpu(), postgres: url ? postgresCpuSeconds() : 0 };
    const walBefore = url ? await walBytes() : 0;
    const writesBefore = coordinatorWrites();
    const agentWritesBefore = agents.writes();

    const start = now();
    agents.go(coordinators);
    const deadline = Date.now() + Math.max(120_000, orders * 20);
    // Followed by the agents' count of the jobs they started, not by the database: a count there
    // would be load on what is measured (on PGlite, inside the measured process).
    for (;;) {
      const ran = await agents.ran();
      // Probe once the fleet is working (its first 1% started: the connect phase is not load),
      // while most of the backlog is still there; then let the probes drain too.
      if (probes.active && ran >= orders * PROBES_FROM) probes.start();
      if (probes.active && ran >= orders * PROBES_UNTIL) probes.stop();
      if (ran >= orders + probes.sent && !probes.active && (await probes.settled()) && (await count(ANY_OPEN)) === 0) break;
      if (Date.now() > deadline) throw new Error(`throughput: work orders still open after the deadline (${await count(OPEN)})`);
      const mark = !probes.active ? orders + probes.sent : orders * (ran < orders * PROBES_FROM ? PROBES_FROM : PROBES_UNTIL);
      await sleep(untilNextLook(ran, mark, now() - start));
    }
    const seconds = (now() - start) / 1000;
    const jobs = orders + probes.sent;
    const cpu = { coordinator: (await coordinatorCpu()) - cpuBefore.coordinator, agents: agents.cpu() - cpuBefore.agents, postgres: url ? postgresCpuSeconds() - cpuBefore.postgres : 0 };
    const wal = url ? (await walBytes()) - walBefore : 0;
    const writes = coordinatorWrites() - writesBefore;
    const agentWrites = agents.writes() - agentWritesBefore;
    const unsucceeded = await count(UNSUCCEEDED);

    await agents.stop();
    await stopCoordinators();
    await monitor?.end();
    const after = url ? await commits(url) : 0;
    return {
      orders: jobs,
      seconds,
      // Only what succeeded counts: graphile-worker's run could not end with a job failed either.
      jobsPerSecond: (jobs - unsucceeded) / seconds,
      unsucceeded,
      enqueue,
      commitsPerJob: url ? (after - before - monitorQueries - probes.sent) / jobs : undefined,
      walPerJob: url ? wal / jobs : undefined,
      cpuPerThousand: { coordinator: (cpu.coordinator * 1000) / jobs, agents: (cpu.agents * 1000) / jobs, postgres: url ? (cpu.postgres * 1000) / jobs : undefined },
      coordinatorWritesPerJob: writes / jobs,
      agentWritesPerJob: agentWrites / jobs,
      probes: await probes.results(),
    };
  } finally {
    await booting.stop();
    await stopCoordinators();
    await monitor?.end();
    if (url) await dropDatabase(url);
  }
}

/**
 * The wait before the next look at how many jobs the fleet started: a tenth of the time the next
 * mark (the probes' start or stop, or the end) is still away at the pace so far, within POLL_MS
 * and MAX_POLL_MS, so a mark is still seen within POLL_MS of it. Each look is a request to every
 * agent process; answering one every 10 ms throughout cost them about 6% of their CPU (profiled
 * 2026-12-05), CPU the machine's two cores took from the run.
 */
function untilNextLook(ran: number, mark: number, elapsedMs: number): number {
  if (ran === 0) return POLL_MS;
  const awayMs = ((mark - ran) * elapsedMs) / ran;
  return Math.min(MAX_POLL_MS, Math.max(POLL_MS, awayMs / 10));
}

/** Kept-alive connections the probe client opens before it is timed: more than are in flight at once (10-30 in the runs of 2026-12-02). */
const PROBE_SOCKETS = 64;
/** Every this many probes, one goes on a connection of its own, opened as it is sent. */
const FRESH_EVERY = 10;

/** Probes sent one way, each timed from just before its POST. */
class ProbeSeries {
  readonly enqueuedAt = new Map<string, number>();
  readonly answers: number[] = [];

  latencies(startedAt: Map<string, number>): number[] {
    return [...this.enqueuedAt].flatMap(([id, t]) => (startedAt.has(id) ? [startedAt.get(id)! - t] : [])).sort((a, b) => a - b);
  }
}

/**
 * High-priority probe work orders, one every `everyMs` from `start()` on, each timed from just
 * before its POST until its adapter starts on some agent. A POST does not wait for the one before:
 * a slow answer must not thin out the probes of a slow moment. Inactive without `everyMs`.
 * They go on connections opened before the clock starts, as a client that keeps its connections
 * does, except every `FRESH_EVERY`th, which opens its own: a busy coordinator takes a new
 * connection once a turn of its event loop (libuv accepts one a turn since 1.45), and a client
 * that opened them as it needed them, as this one did until 2026-12-02, timed its own connects.
 */
function probing(coordinator: CoordinatorProcess, agents: AgentFleet, everyMs?: number) {
  const startedAt = new Map<string, number>();
  const [kept, fresh] = [new ProbeSeries(), new ProbeSeries()];
  const off = agents.onProbe((id, t) => startedAt.set(id, t));
  let active = everyMs !== undefined;
  let sent = 0;
  let begin!: () => void;
  const begun = new Promise<void>((resolve) => (begin = resolve));
  const api = coordinator.api;
  const warm = everyMs === undefined ? Promise.resolve() : api.warm(PROBE_SOCKETS);
  const loop = (async () => {
    if (everyMs === undefined) return;
    await warm;
    const opened = api.opened;
    await begun;
    const posts: Promise<void>[] = [];
    while (active) {
      const t = now();
      const series = ++sent % FRESH_EVERY === 0 ? fresh : kept;
      posts.push(
        api.enqueue({ ...PROBE_ORDER, priority: 1000 }, { fresh: series === fresh }).then((id) => {
          series.enqueuedAt.set(id, t);
          series.answers.push(now() - t);
        }),
      );
      await sleep(Math.max(0, everyMs - (now() - t)));
    }
    await Promise.all(posts);
    return api.opened - opened;
  })();
  return {
    get active() {
      return active;
    },
    get sent() {
      return sent;
    },
    /** Resolves once the probe client's connections are open. */
    ready(): Promise<void> {
      return warm;
    },
    start() {
      begin();
    },
    stop() {
      active = false;
      begin();
    },
    /** True once the last POST answered and every probe reported its start. */
    async settled(): Promise<boolean> {
      await loop;
      return startedAt.size >= kept.enqueuedAt.size + fresh.enqueuedAt.size;
    },
    /** Enqueue → start, and enqueue → the POST's answer, of each probe of each kind, ms, sorted. */
    async results(): Promise<ThroughputResult["probes"]> {
      off();
      const times = (series: ProbeSeries) => ({ latencies: series.latencies(startedAt), answers: series.answers.toSorted((a, b) => a - b) });
      return { kept: times(kept), fresh: times(fresh), opened: (await loop) ?? 0 };
    },
  };
}
