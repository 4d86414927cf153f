// Scenario 5, fleet size: as many idle agents as the open-files limit of one process allows
// (`ulimit -Hn`, less a margin for the coordinator's other files; or the loopback ports, if fewer) connected to one
// coordinator process on Postgres, spread over several agent processes, each of which keeps a few
// dozen dialling at a time (or, with `inFlight: 0`, all at once: a fleet coming back to a restarted
// coordinator). Measured: how many connected, how long that took and what it cost, the
// coordinator's memory per agent (RSS after a forced full GC, with every agent connected and
// settled, against the same before any dialled) and the coordinator's CPU over a window while they
// heartbeat (every 10 s, the default; idle, an agent beats every other heartbeat), as a share of one
// core and per beat. The quick run connects 2,000 agents only, and has them heartbeat every 2 s so
// that its windows can be short.
// Figures are reported, never asserted.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";
import { IDLE_BEAT_TICKS } from "../agent/connection.ts";
import type { CoordinatorConfig, CoordinatorReady } from "./coordinator-process.ts";
import { processCpuSeconds } from "./cpu.ts";
import { CoordinatorProcess } from "./fleet.ts";
import type { IdleAgentsConfig, IdleAgentsStatus } from "./idle-agents-process.ts";
import { Child } from "./children.ts";
import { createDatabase, dropDatabase, now, sleep } from "./support.ts";
import { type Row, ratio } from "./table.ts";
import type { BareBeatsConfig, BareBeatsReady } from "./bare-beats-process.ts";

export type FleetSizeOptions = {
  quick: boolean;
  /** How many agents (default: the open-files limit or the ephemeral ports, the fewer, less `FD_MARGIN`); for trials. */
  agents?: number;
  /** Agents dialled and not yet welcomed at a time, per agent process (default `IN_FLIGHT`); 0: all dial at once. */
  inFlight?: number;
  /** For diagnosis: CPU-profile the coordinator while the agents connect and while they heartbeat, into this directory. */
  profileDir?: string;
  /** Receives the notes for the table (how the figures were taken, what went wrong). */
  note?: (text: string) => void;
};

/** Agent processes the fleet is spread over (a few thousand agents each). */
const PROCESSES = 8;
/** Files the coordinator holds besides agent sockets: stdio, IPC, epoll, the pool's 10 connections, the listener... */
const FD_MARGIN = 100;
/**
 * Agents each agent process keeps dialling at once: the next dials when one is welcomed, so the
 * fleet connects as fast as the coordinator welcomes it. All at once (a fleet coming back to a
 * restarted coordinator) is `inFlight: 0`.
 */
const IN_FLIGHT = 32;
const QUICK_AGENTS = 2_000;
const LEASE_SECONDS = 30;
/** The agents' labels: no work order is ever enqueued for them. */
const LABELS = { pool: "fleet-size" };
const CONNECTED = `SELECT count(*)::int AS n FROM agents WHERE session_id IS NOT NULL`;
const KIB = 1024;

type Memory = { rss: number; heapTotal: number; heapUsed: number; external: number; arrayBuffers: number };

/** The coordinator child that can be asked for a full GC (coordinator-gc-process.ts). */
class Coordinator {
  private constructor(private readonly process: CoordinatorProcess) {}

  static async start({ database, ...options }: CoordinatorConfig): Promise<Coordinator> {
    return new Coordinator(await CoordinatorProcess.start(database, options, "coordinator-gc-process"));
  }

  get child(): Child {
    return this.process.child;
  }

  get ready(): CoordinatorReady {
    return this.process.ready;
  }

  get pid(): number {
    return this.child.process.pid!;
  }

  /** Memory after a full GC. */
  memory(): Promise<Memory> {
    return this.child.request<Memory>({ type: "memory" });
  }

  cpu(): number {
    return processCpuSeconds(this.pid);
  }

  /** CPU seconds in the kernel (system time) so far: here mostly socket reads and writes. */
  systemCpu(): number {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, "utf8");
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[12]) / 100;
    } catch {
      return NaN;
    }
  }

  stop(): Promise<void> {
    return this.process.stop();
  }
}

export async function fleetSize(options: FleetSizeOptions): Promise<Row[]> {
  const note = options.note ?? (() => {});
  const hardLimit = fileLimit();
  const ports = ephemeralPorts();
  const bound = ports < hardLimit ? `loopback ports ${ports}` : `ulimit -Hn ${hardLimit}`;
  const target = options.agents ?? (options.quick ? QUICK_AGENTS : Math.min(ports, hardLimit) - FD_MARGIN);
  const inFlight = options.inFlight ?? IN_FLIGHT;
  // Seconds: the heartbeat; after the first GC, the wait for its sweeping; the windows of idle CPU,
  // of settling after the connect, and of CPU while they heartbeat.
  const windows = options.quick
    ? { heartbeat: 2, sweep: 2, baseline: 3, settle: 3, cpu: 4 }
    : { heartbeat: 10, sweep: 3, baseline: 10, settle: 15, cpu: 30 };
  const connectDeadlineMs = 600_000;
  const stallMs = 60_000;
  const log = (text: string) => process.stderr.write(`  fleet size: ${text}\n`);

  const url = await createDatabase("fleet");
  let coordinator: Coordinator | undefined;
  const clients: Child[] = [];
  const monitor = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} });
  const count = async (sql: string) => (await monitor.unsafe<{ n: number }[]>(sql))[0]!.n;
  try {
    coordinator = await Coordinator.start({ database: { kind: "postgres", url }, heartbeatSeconds: windows.heartbeat, leaseSeconds: LEASE_SECONDS });
    const limits = openFiles(coordinator.pid);
    const shares = split(target, PROCESSES);
    const dialling = inFlight > 0 ? `at most ${inFlight * shares.length} dialling at a time` : "all dialling at once";
    for (const [p, share] of shares.entries()) {
      clients.push(
        new Child("idle-agents-process", {
          urls: [coordinator.ready.agentUrl],
          token: coordinator.ready.agentToken,
          prefix: `idle-${p}`,
          count: share,
          labels: LABELS,
          inFlight,
        } satisfies IdleAgentsConfig),
      );
    }
    await Promise.all(clients.map((child) => child.next("ready", 120_000)));
    const statuses = () => Promise.all(clients.map((child) => child.request<IdleAgentsStatus>({ type: "status" })));

    // Before: the coordinator with no agent, after a GC; and its own CPU while idle (reaper, statistics).
    await sleep(1_000);
    const before = await coordinator.memory();
    // The forced GC's helper threads go on sweeping for a while; let them finish before counting.
    await sleep(windows.sweep * 1000);
    let cpu0 = coordinator.cpu();
    await sleep(windows.baseline * 1000);
    const idleCores = (coordinator.cpu() - cpu0) / windows.baseline;

    log(`${target} agents over ${shares.length} processes, ${dialling} (${bound}; coordinator fd limit ${limits.soft})`);
    if (options.profileDir) await coordinator.child.request({ type: "profileStart" });
    const overflows0 = listenOverflows();
    let pg0 = await backends(monitor);
    let commits0 = await commits(monitor);
    cpu0 = coordinator.cpu();
    const start = now();
    for (const child of clients) child.send({ type: "go" });
    let connected = 0;
    let progressAt = Date.now();
    let all: IdleAgentsStatus[] = [];
    const deadline = Date.now() + connectDeadlineMs;
    let logged = 0;
    for (;;) {
      await sleep(500);
      all = await statuses();
      const n = sum(all, (s) => s.connected);
      if (n > connected) progressAt = Date.now();
      connected = n;
      if (Date.now() - logged > 10_000) {
        logged = Date.now();
        log(`${n} connected after ${((now() - start) / 1000).toFixed(0)} s`);
      }
      if (connected >= target || Date.now() > deadline || Date.now() - progressAt > stallMs) break;
    }
    const lastWelcome = Math.max(...all.map((s) => s.lastWelcomeAt));
    const connectSeconds = lastWelcome > 0 ? (lastWelcome - start) / 1000 : NaN;
    const connectCpu = coordinator.cpu() - cpu0;
    const connectPostgres = backendCpu(pg0, await backends(monitor));
    const connectCommits = (await commits(monitor)) - commits0;
    const overflows = listenOverflows() - overflows0;
    const storm = summarize(all);
    if (options.profileDir) await coordinator.child.request({ type: "profileStop", path: join(options.profileDir, "coordinator-connect.cpuprofile") });
    if (connected < target) {
      note(
        `fleet size: ${connected} of ${target} agents connected (stopped waiting after ${((now() - start) / 1000).toFixed(0)} s); ` +
          `coordinator fds ${fdCount(coordinator.pid)} of ${limits.soft}`,
      );
    }

    // Settled: their first heartbeats in, the leases renewed, the claim rounds over.
    await sleep(windows.settle * 1000);
    const after = await coordinator.memory();
    const measured = sum(await statuses(), (s) => s.connected);
    const fds = fdCount(coordinator.pid);
    const inDatabase = await count(CONNECTED);

    // While they heartbeat.
    const welcomesBefore = sum(await statuses(), (s) => s.welcomes);
    if (options.profileDir) await coordinator.child.request({ type: "profileStart" });
    const agentsCpu0 = sum(clients, (c) => processCpuSeconds(c.process.pid));
    pg0 = await backends(monitor);
    commits0 = await commits(monitor);
    cpu0 = coordinator.cpu();
    const system0 = coordinator.systemCpu();
    const t0 = now();
    await sleep(windows.cpu * 1000);
    const heartbeatCpu = coordinator.cpu() - cpu0;
    const heartbeatSystem = coordinator.systemCpu() - system0;
    const heartbeatPostgres = backendCpu(pg0, await backends(monitor));
    const heartbeatCommits = (await commits(monitor)) - commits0;
    const seconds = (now() - t0) / 1000;
    const agentsCpu = sum(clients, (c) => processCpuSeconds(c.process.pid)) - agentsCpu0;
    if (options.profileDir) await coordinator.child.request({ type: "profileStop", path: join(options.profileDir, "coordinator-heartbeat.cpuprofile") });
    const end = await statuses();
    const stillConnected = sum(end, (s) => s.connected);
    const reconnects = sum(end, (s) => s.welcomes) - welcomesBefore;

    const beats = (stillConnected * seconds) / (windows.heartbeat * IDLE_BEAT_TICKS);
    const cores = heartbeatCpu / seconds;
    const perAgent = (field: keyof Memory) => (after[field] - before[field]) / KIB / Math.max(1, measured);
    const clientRss = sum(end, (s) => s.rss);

    note(
      `fleet size: ${stillConnected} idle agents (labels pool=fleet-size, capacity 1) over ${shares.length} agent processes on loopback, ` +
        `one coordinator on Postgres, heartbeat ${windows.heartbeat} s (the default is 10 s; an idle agent beats every ${windows.heartbeat * IDLE_BEAT_TICKS} s), lease ${LEASE_SECONDS} s; ` +
        `${inDatabase} agents with a session in the database; coordinator fds ${fds} of ${limits.soft} (ulimit -Hn ${hardLimit})`,
    );
    note(
      `fleet size: connecting (${dialling}): ${storm}; listen-queue overflows on this machine meanwhile ${overflows}; ` +
        `coordinator CPU while they connected ${connectCpu.toFixed(1)} s, Postgres (the backends of this database) ${connectPostgres.toFixed(1)} s, ` +
        `${connectCommits} transactions (${(connectCommits / Math.max(1, connected)).toFixed(1)} per agent)`,
    );
    note(
      `fleet size: memory is the coordinator's RSS after a forced full GC, with ${measured} agents connected and settled ${windows.settle} s, ` +
        `against the same before any dialled: ${mib(before.rss)} → ${mib(after.rss)} MiB ` +
        `(V8 heap used ${mib(before.heapUsed)} → ${mib(after.heapUsed)} MiB, V8 heap reserved ${mib(before.heapTotal)} → ${mib(after.heapTotal)} MiB, ` +
        `external ${mib(before.external)} → ${mib(after.external)} MiB; the rest is native: socket handles, and memory malloc keeps after the connect)`,
    );
    note(
      `fleet size: coordinator CPU over ${seconds.toFixed(0)} s of heartbeats ${heartbeatCpu.toFixed(2)} s, ` +
        `${heartbeatSystem.toFixed(2)} s of it in the kernel; Postgres (the backends of this database) ${heartbeatPostgres.toFixed(2)} s, ${heartbeatCommits} transactions; idle with no agent it used ` +
        `${(idleCores * 100).toFixed(2)}% of a core (reaper, statistics), so heartbeats cost ${((cores - idleCores) * 100).toFixed(1)}% of it; ` +
        `the agent processes used ${((agentsCpu / seconds) * 100).toFixed(0)}% of a core meanwhile, RSS ${mib(clientRss)} MiB in all; ` +
        `${reconnects} reconnections during the window` +
        (options.profileDir ? `; the coordinator was being CPU-profiled (figures inflated), profiles in ${options.profileDir}` : ""),
    );

    const perBeat = microsPerBeat(cores - idleCores, seconds, beats);
    // The peer needs the loopback ports and the cores to itself.
    await Promise.all(clients.map((child) => child.stop()));
    await coordinator.stop();
    const bare = await bareBeats({ target, shares, inFlight: inFlight || IN_FLIGHT, beatMs: windows.heartbeat * IDLE_BEAT_TICKS * 1000, windows, log });
    note(
      `fleet size: the peer, a bare ws server (it notes when each socket was last heard, nothing else) with ${bare.open} sockets beating as idle agents do, ` +
        `from ${shares.length} processes: ${bare.cpuPercent.toFixed(2)}% of a core over ${windows.cpu} s, ${bare.idlePercent.toFixed(2)}% idle before they dialled`,
    );

    return [
      { scenario: `5 fleet size: idle agents connected, one coordinator (${bound})`, figure: stillConnected, unit: "agents" },
      { scenario: `5 fleet size: time for ${connected} agents to connect, ${dialling}`, figure: connectSeconds, unit: "s" },
      { scenario: "5 fleet size: coordinator CPU per agent connect", figure: (connectCpu * 1000) / Math.max(1, connected), unit: "ms" },
      { scenario: "5 fleet size: coordinator memory per idle agent (RSS after GC)", figure: perAgent("rss"), unit: "KiB/agent" },
      { scenario: "5 fleet size: of which V8 heap", figure: perAgent("heapUsed"), unit: "KiB/agent" },
      { scenario: `5 fleet size: coordinator CPU while they heartbeat (every ${windows.heartbeat * IDLE_BEAT_TICKS} s idle)`, figure: cores * 100, unit: "% of a core" },
      { scenario: "5 fleet size: coordinator CPU per beat (net of idle)", figure: perBeat, unit: "µs", ratio: ratio(perBeat, bare.perBeat, "a bare ws server, same beats") },
      { scenario: "5 fleet size: a bare ws server's CPU per beat, same beats (no coordinator; net of idle)", figure: bare.perBeat, unit: "µs" },
      { scenario: "5 fleet size: a bare ws server's CPU while they beat, net of idle", figure: bare.cpuPercent - bare.idlePercent, unit: "% of a core" },
    ];
  } finally {
    await Promise.all(clients.map((child) => child.stop()));
    await coordinator?.stop();
    await monitor.end();
    await dropDatabase(url);
  }
}

/** CPU µs a beat, from the cores the beats kept busy (net of idle) over `seconds`. */
function microsPerBeat(netCores: number, seconds: number, beats: number): number {
  return ((netCores * seconds) / Math.max(1, beats)) * 1e6;
}

type BareBeatsOptions = {
  target: number;
  shares: number[];
  inFlight: number;
  beatMs: number;
  windows: { baseline: number; settle: number; cpu: number };
  log: (text: string) => void;
};

/** The same number of sockets beating as the idle agents did, against a bare ws server: its CPU, idle and while they beat, and per beat net of idle. */
async function bareBeats({ target, shares, inFlight, beatMs, windows, log }: BareBeatsOptions) {
  const server = new Child("bare-beats-process", { role: "server" } satisfies BareBeatsConfig);
  const clients: Child[] = [];
  try {
    const { url } = await server.next<BareBeatsReady>("ready");
    const cpu = () => processCpuSeconds(server.process.pid);
    let cpu0 = cpu();
    await sleep(windows.baseline * 1000);
    const idleCores = (cpu() - cpu0) / windows.baseline;
    for (const share of shares) clients.push(new Child("bare-beats-process", { role: "clients", url: url!, count: share, beatMs, inFlight } satisfies BareBeatsConfig));
    await Promise.all(clients.map((child) => child.next("ready", 120_000)));
    const opened = () => Promise.all(clients.map((child) => child.request<number>({ type: "status" }))).then((counts) => counts.reduce((a, b) => a + b, 0));
    const deadline = Date.now() + 300_000;
    while ((await opened()) < target && Date.now() < deadline) await sleep(500);
    log(`bare ws peer: ${await opened()} sockets open`);
    await sleep(windows.settle * 1000);
    cpu0 = cpu();
    const t0 = now();
    await sleep(windows.cpu * 1000);
    const seconds = (now() - t0) / 1000;
    const cores = (cpu() - cpu0) / seconds;
    const open = await opened();
    const beats = (open * seconds * 1000) / beatMs;
    return { open, cpuPercent: cores * 100, idlePercent: idleCores * 100, perBeat: microsPerBeat(cores - idleCores, seconds, beats) };
  } finally {
    await Promise.all(clients.map((child) => child.stop()));
    await server.stop();
  }
}

/** CPU seconds so far of each Postgres backend serving this database (the coordinator's pool and the monitor), by pid. */
async function backends(monitor: postgres.Sql): Promise<Map<number, number>> {
  const rows = await monitor.unsafe<{ pid: number }[]>(`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`);
  return new Map(rows.map(({ pid }) => [pid, processCpuSeconds(pid)]));
}

/** CPU the backends used between two readings (a backend gone meanwhile takes its share with it). */
function backendCpu(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, cpu] of after) total += cpu - (before.get(pid) ?? 0);
  return total;
}

/** Transactions committed in this database (published by the backends at most once a second). */
async function commits(monitor: postgres.Sql): Promise<number> {
  const [row] = await monitor.unsafe<{ n: string }[]>(`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()`);
  return Number(row?.n ?? 0);
}

/** TcpExt ListenOverflows of this machine (every listener, not just ours): connections dropped because an accept queue was full. */
function listenOverflows(): number {
  try {
    const lines = readFileSync("/proc/net/netstat", "utf8").split("\n");
    const header = lines.findIndex((l) => l.startsWith("TcpExt:"));
    const names = lines[header]!.split(" ");
    const values = lines[header + 1]!.split(" ");
    return Number(values[names.indexOf("ListenOverflows")]);
  } catch {
    return NaN;
  }
}

/** The local ports a connection to one address may take: every agent's socket to the coordinator needs one. */
function ephemeralPorts(): number {
  const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  return high! - low! + 1;
}

/** `ulimit -Hn` of a shell started from here (what a coordinator started alike may raise its own limit to). */
function fileLimit(): number {
  const text = execFileSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).trim();
  return text === "unlimited" ? Infinity : Number(text);
}

/** The open-files limit a process runs with (Node raises its soft limit to the hard one at start). */
function openFiles(pid: number): { soft: number; hard: number } {
  const line = readFileSync(`/proc/${pid}/limits`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("Max open files"));
  const [soft, hard] = (line ?? "").split(/\s+/).slice(3, 5).map((v) => (v === "unlimited" ? Infinity : Number(v)));
  return { soft: soft ?? NaN, hard: hard ?? NaN };
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/** `total` split into `parts` near-equal shares. */
function split(total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, p) => Math.floor(total / parts) + (p < total % parts ? 1 : 0)).filter((n) => n > 0);
}

function sum<T>(items: T[], value: (item: T) => number): number {
  return items.reduce((total, item) => total + value(item), 0);
}

const mib = (bytes: number) => (bytes / KIB / KIB).toFixed(1);

/** Welcomes, connection errors and closes across the agent processes, in a line. */
function summarize(all: IdleAgentsStatus[]): string {
  const merge = (pick: (s: IdleAgentsStatus) => Record<string, number>) => {
    const merged: Record<string, number> = {};
    for (const s of all) for (const [key, n] of Object.entries(pick(s))) merged[key] = (merged[key] ?? 0) + n;
    return Object.entries(merged)
      .sort((a, b) => b[1] - a[1])
      .map(([key, n]) => `${n}× ${key}`)
      .join(", ");
  };
  const first = Math.min(...all.map((s) => s.firstWelcomeAt || Infinity));
  const last = Math.max(...all.map((s) => s.lastWelcomeAt));
  return (
    `${sum(all, (s) => s.welcomes)} welcomes (${sum(all, (s) => s.connected)} agents connected now, ${sum(all, (s) => s.failed)} gave up), ` +
    `first to last welcome ${Number.isFinite(first) ? ((last - first) / 1000).toFixed(1) : "n/a"} s; ` +
    `connection errors: ${merge((s) => s.errors) || "none"}; closes by code: ${merge((s) => s.closes) || "none"}`
  );
}
