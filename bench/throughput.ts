// Scenario 1/2/7/8 for jobfleet: N no-op work orders enqueued in bulk, then worked by a fleet of
// agents (several agent processes, real WebSockets on loopback, one coordinator process, or for 7
// several on the same Postgres database) until all have ended. Timed from the moment the agents
// dial until the last work order ended; the database's commits and each party's CPU are read
// around that working phase only.
import postgres from "postgres";
import { type AgentFleet, bootAgents, CoordinatorProcess, type FleetShape, NOOP_ORDER, PROBE_ORDER } from "./fleet.ts";
import { postgresCpuSeconds } from "./cpu.ts";
import { commits, createDatabase, dropDatabase, now, sleep, walBytes } from "./support.ts";


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
  /** Enqueue → adapter start of each probe, ms. */
  probeLatencies: number[];
};

// Polled every 50 ms, so it must not scan the table: each state's first row through the (state, id)
// index. The full count (a scan of the open rows) is taken only while probes run.
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
    const before = url ? await commits(url) : 0;
    const cpuBefore = { coordinator: await coordinatorCpu(), agents: agents.cpu(), postgres: url ? postgresCpuSeconds() : 0 };
    const walBefore = url ? await walBytes() : 0;

    const start = now();
    agents.go(coordinators);
    const deadline = Date.now() + Math.max(120_000, orders * 20);
    for (;;) {
      // Probe once the fleet is working (its first 1% done: the connect phase is not load),
      // while most of the backlog is still there; then let the probes drain too.
      if (probes.active) {
        const left = await count(OPEN);
        if (left <= orders * 0.99) probes.start();
        if (left < orders * 0.1) probes.stop();
      }
      const open = await count(ANY_OPEN);
      if (open === 0 && !probes.active && (await probes.settled())) break;
      if (Date.now() > deadline) throw new Error(`throughput: work orders still open after the deadline (${await count(OPEN)})`);
      await sleep(50);
    }
    const seconds = (now() - start) / 1000;
    const jobs = orders + probes.sent;
    const cpu = { coordinator: (await coordinatorCpu()) - cpuBefore.coordinator, agents: agents.cpu() - cpuBefore.agents, postgres: url ? postgresCpuSeconds() - cpuBefore.postgres : 0 };
    const wal = url ? (await walBytes()) - walBefore : 0;
    const unsucceeded = await count(UNSUCCEEDED);

    await agents.stop();
    await stopCoordinators();
    await monitor?.end();
    const after = url ? await commits(url) : 0;
    return {
      orders: jobs,
      seconds,
      jobsPerSecond: jobs / seconds,
      unsucceeded,
      enqueue,
      commitsPerJob: url ? (after - before - monitorQueries - probes.sent) / jobs : undefined,
      walPerJob: url ? wal / jobs : undefined,
      cpuPerThousand: { coordinator: (cpu.coordinator * 1000) / jobs, agents: (cpu.agents * 1000) / jobs, postgres: url ? (cpu.postgres * 1000) / jobs : undefined },
      probeLatencies: probes.latencies(),
    };
  } finally {
    await booting.stop();
    await stopCoordinators();
    await monitor?.end();
    if (url) await dropDatabase(url);
  }
}

/**
 * High-priority probe work orders, one every `everyMs` from `start()` on, each timed from just
 * before its POST until its adapter starts on some agent. Inactive without `everyMs`.
 */
function probing(coordinator: CoordinatorProcess, agents: AgentFleet, everyMs?: number) {
  const enqueuedAt = new Map<string, number>();
  const startedAt = new Map<string, number>();
  const off = agents.onProbe((id, t) => startedAt.set(id, t));
  let active = everyMs !== undefined;
  let sent = 0;
  let begin!: () => void;
  const begun = new Promise<void>((resolve) => (begin = resolve));
  const api = coordinator.api;
  const loop = (async () => {
    if (everyMs === undefined) return;
    await begun;
    while (active) {
      const t = now();
      sent++;
      const id = await api.enqueue({ ...PROBE_ORDER, priority: 1000 });
      enqueuedAt.set(id, t);
      await sleep(Math.max(0, everyMs - (now() - t)));
    }
  })();
  return {
    get active() {
      return active;
    },
    get sent() {
      return sent;
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
      return startedAt.size >= enqueuedAt.size;
    },
    latencies(): number[] {
      off();
      return [...enqueuedAt].flatMap(([id, t]) => (startedAt.has(id) ? [startedAt.get(id)! - t] : [])).sort((a, b) => a - b);
    },
  };
}
