// Scenario 6, logs: log lines per second streamed by busy agents and persisted, and the delay from a
// line printed to the line readable through the API.
//
// Lines/s: M work orders that each print L lines of B bytes (["log", L, B] in agents-process.ts: the
// output goes to `ctx.log` in 4 KiB chunks, as pipe reads would) are enqueued in bulk, then worked
// by 4 agent processes × 25 agents of capacity 1. Timed from the moment the agents dial until no
// work order of the load is open and the jobs' persisted byte counts add up to M × L × B; the
// persisted lines (newlines in job_logs) are counted once afterwards, outside the clock.
//
// Delay: a probe work order (["log-probe", HOLD_MS], priority 1000) is enqueued, and the parent
// follows its log (GET /v1/work-orders/:id/log?follow=true, server-sent events, as `jobfleet run`
// does). Once the follow is open, the parent tells the agents to print: the probe, started by then
// or later, prints one line carrying its time and stays running HOLD_MS longer, so the line leaves
// the agent on the log batcher's own clock (50 ms), not with the job's end. Timed from `ctx.log` in
// the agent to the line's arrival in the parent; the enqueue and the claim are not in it.
// One probe every 50 ms while the load runs (until 90% of it is done), then as many on the same
// fleet once it is idle.
import postgres from "postgres";
import { type AgentFleet, bootAgents, CoordinatorProcess, type FleetShape } from "./fleet.ts";
import { postgresCpuSeconds } from "./cpu.ts";
import { createDatabase, dropDatabase, now, percentile, sleep } from "./support.ts";
import type { Row } from "./table.ts";

const FLEET: FleetShape = { processes: 4, perProcess: 25, capacity: 1 };
const LINES_PER_JOB = 1_000;
const BYTES_PER_LINE = 80;
const PROBE_EVERY_MS = 50;
/** How long a probe job keeps running after its line: well past the agent's 50 ms batching. */
const PROBE_HOLD_MS = 500;
/** A probe whose line is not readable by then counts as missing. */
const PROBE_TIMEOUT_MS = 30_000;
const TARGET_LINES_PER_SECOND = 50_000;

export type LogScenarioOptions = {
  quick: boolean;
  /** Where the scenario's notes go (e.g. `table.note`); stderr when absent. */
  note?: (text: string) => void;
};

export async function logScenario(options: LogScenarioOptions): Promise<Row[]> {
  const note = options.note ?? ((text: string) => process.stderr.write(`  note: ${text}\n`));
  const sizes = options.quick ? { jobs: 200, idleProbes: 40 } : { jobs: 1_000, idleProbes: 400 };
  const { jobs } = sizes;
  const lines = jobs * LINES_PER_JOB;
  const bytes = lines * BYTES_PER_LINE;
  const order = { spec: { command: ["log", String(LINES_PER_JOB), String(BYTES_PER_LINE)] }, selector: "pool=bench" };
  process.stderr.write(
    `logs: ${jobs} jobs × ${LINES_PER_JOB} lines of ${BYTES_PER_LINE} B by ${FLEET.processes}×${FLEET.perProcess} agents; log probes every ${PROBE_EVERY_MS} ms under load, then ${sizes.idleProbes} on the idle fleet\n`,
  );

  const url = await createDatabase("logs");
  const booting = bootAgents(FLEET, "logs");
  let coordinator: CoordinatorProcess | undefined;
  let loaded: ReturnType<LogProbes["every"]> | undefined;
  // Counted on a connection of our own, as the throughput scenario's monitor does.
  const monitor = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} });
  try {
    coordinator = await CoordinatorProcess.start({ kind: "postgres", url });
    const api = coordinator.api;
    await api.enqueueBulk(order, jobs);
    const last = (await monitor<{ last: string }[]>`SELECT max(id)::text AS last FROM work_orders`)[0]!.last;
    const open = async () =>
      (await monitor<{ n: number }[]>`SELECT count(*)::int AS n FROM work_orders WHERE state IN ('pending', 'claimed', 'running') AND id <= ${last}`)[0]!.n;
    const persistedBytes = async () =>
      Number((await monitor<{ n: string }[]>`SELECT coalesce(sum(log_bytes), 0)::text AS n FROM jobs WHERE work_order_id <= ${last}`)[0]!.n);

    const agents = await booting.fleet;
    const probes = new LogProbes(coordinator, agents);
    const cpuBefore = { coordinator: (await coordinator.usage()).cpu, agents: agents.cpu(), postgres: postgresCpuSeconds() };

    // Lines/s, with probes under load.
    const start = now();
    agents.go(coordinator);
    loaded = probes.every(PROBE_EVERY_MS);
    const deadline = Date.now() + Math.max(120_000, lines / 100);
    let seconds: number;
    for (;;) {
      const left = await open();
      if (loaded.active && left < jobs * 0.1) loaded.stop();
      if (left === 0 && (await persistedBytes()) >= bytes) {
        seconds = (now() - start) / 1000;
        break;
      }
      if (Date.now() > deadline) throw new Error(`logs: ${left} work orders still open after the deadline`);
      await sleep(50);
    }
    const cpu = {
      coordinator: (await coordinator.usage()).cpu - cpuBefore.coordinator,
      agents: agents.cpu() - cpuBefore.agents,
      postgres: postgresCpuSeconds() - cpuBefore.postgres,
    };
    loaded.stop();
    const underLoad = await loaded.results();

    // Checked outside the clock: every line stored once, every work order succeeded.
    const [check] = await monitor<{ lines: string; bytes: string; unsucceeded: number }[]>`
      SELECT
        (SELECT coalesce(sum(length(l.data) - length(replace(l.data, E'\n', ''))), 0)::text
         FROM job_logs l JOIN jobs j ON j.id = l.job_id WHERE j.work_order_id <= ${last}) AS lines,
        (SELECT coalesce(sum(octet_length(l.data)), 0)::text
         FROM job_logs l JOIN jobs j ON j.id = l.job_id WHERE j.work_order_id <= ${last}) AS bytes,
        (SELECT count(*)::int FROM work_orders WHERE id <= ${last} AND state <> 'succeeded') AS unsucceeded`;
    const [chunks] = await monitor<{ n: number; avg: number; stored: number }[]>`
      SELECT count(*)::int AS n, coalesce(avg(octet_length(l.data)), 0)::float8 AS avg, coalesce(sum(pg_column_size(l.data)), 0)::float8 AS stored
      FROM job_logs l JOIN jobs j ON j.id = l.job_id WHERE j.work_order_id <= ${last}`;

    // Delay on the same fleet, now idle.
    await sleep(500);
    const idle = probes.count(sizes.idleProbes, PROBE_EVERY_MS);
    const idleResults = await idle.results();

    const linesPerSecond = lines / seconds;
    const rows: Row[] = [
      { scenario: `6 logs persisted, ${jobs}×${LINES_PER_JOB} lines of ${BYTES_PER_LINE} B, ${FLEET.processes}×${FLEET.perProcess} agents`, figure: linesPerSecond, unit: "lines/s" },
      { scenario: "6 logs persisted, bytes", figure: bytes / 1e6 / seconds, unit: "MB/s" },
      ...delayRows(`6 log delay print→readable (SSE follow), under load (${underLoad.delays.length} probes)`, underLoad.delays),
      ...delayRows(`6 log delay print→readable (SSE follow), idle fleet (${idleResults.delays.length} probes)`, idleResults.delays),
    ];

    note(
      `logs: ${(lines / 1e3).toFixed(0)}k lines (${(bytes / 1e6).toFixed(1)} MB) in ${seconds.toFixed(1)} s; target ≥ ${TARGET_LINES_PER_SECOND.toLocaleString("en-US")} lines/s ${linesPerSecond >= TARGET_LINES_PER_SECOND ? "met" : "not met"}`,
    );
    note(
      `logs: CPU s per 1M lines: coordinator ${((cpu.coordinator * 1e6) / lines).toFixed(1)}, agents (${FLEET.processes} processes) ${((cpu.agents * 1e6) / lines).toFixed(1)}, Postgres server (all its clients) ${((cpu.postgres * 1e6) / lines).toFixed(1)}; wall ${((seconds * 1e6) / lines).toFixed(1)} s`,
    );
    note(
      `logs: stored as ${chunks!.n} job_logs rows of ${(chunks!.avg / 1024).toFixed(1)} KiB on average, ${(chunks!.stored / 1e6).toFixed(1)} MB after Postgres's compression (lines are random words)`,
    );
    if (Number(check!.lines) !== lines || Number(check!.bytes) !== bytes) {
      note(`logs: persisted ${check!.lines} lines / ${check!.bytes} bytes, expected ${lines} / ${bytes}`);
    }
    if (check!.unsucceeded > 0) note(`logs: ${check!.unsucceeded} work orders did not end succeeded`);
    for (const [what, r] of [
      ["under load", underLoad],
      ["idle", idleResults],
    ] as const) {
      if (r.missing > 0) note(`logs: ${r.missing} of ${r.sent} probes ${what} not readable within ${PROBE_TIMEOUT_MS / 1000} s`);
      if (r.errors.length > 0) note(`logs: ${r.errors.length} of ${r.sent} probes ${what} failed, first: ${r.errors[0]}`);
      if (r.lateFollows > 0) note(`logs: ${r.lateFollows} probes ${what} printed before their follow was open (the agents' 30 s fallback); their delay is an upper bound`);
      const ms = (p: number) => percentile(r.opens, p).toFixed(0);
      note(`logs: probes ${what}, enqueue POST → follow response (before the line is printed, not in the delay): p50 ${ms(50)} ms, p99 ${ms(99)} ms`);
    }
    return rows;
  } finally {
    loaded?.stop();
    await booting.stop();
    await coordinator?.stop().catch(() => {});
    await monitor.end().catch(() => {});
    await dropDatabase(url);
  }
}

function delayRows(scenario: string, sorted: number[]): Row[] {
  return ([50, 90, 99] as const).map((p) => ({ scenario: `${scenario} p${p}`, figure: percentile(sorted, p), unit: "ms" }));
}

type ProbeResults = { sent: number; delays: number[]; missing: number; lateFollows: number; errors: string[]; opens: number[] };
/** `open`: ms from just before the POST until the follow's response arrived (not part of the delay). */
type ProbeRun = { delay?: number; error?: string; open?: number };

/**
 * Log probes: each is enqueued, its log followed over SSE from when its POST answers, and timed from
 * the agent's `ctx.log` (the `logged` message) to the moment its line reaches this process.
 */
class LogProbes {
  private readonly printed = new Map<string, { t: number; line: string }>();
  private readonly waiting = new Map<string, (printed: { t: number; line: string }) => void>();

  constructor(
    private readonly coordinator: CoordinatorProcess,
    private readonly agents: AgentFleet,
  ) {
    for (const child of agents.children) {
      child.on((message) => {
        if (message.type !== "logged") return;
        const id = String(message.workOrderId);
        const printed = { t: Number(message.t), line: String(message.line) };
        this.printed.set(id, printed);
        this.waiting.get(id)?.(printed);
      });
    }
  }

  /** One probe every `everyMs` until stopped. */
  every(everyMs: number): { readonly active: boolean; stop(): void; results(): Promise<ProbeResults> } {
    let active = true;
    const runs: Promise<ProbeRun>[] = [];
    let lateFollows = 0;
    const loop = (async () => {
      while (active) {
        const t = now();
        runs.push(this.probe(() => lateFollows++));
        await sleep(Math.max(0, everyMs - (now() - t)));
      }
    })();
    return {
      get active() {
        return active;
      },
      stop: () => {
        active = false;
      },
      results: async () => {
        await loop;
        return summarize(await Promise.all(runs), lateFollows);
      },
    };
  }

  /** `count` probes, one every `everyMs`. */
  count(count: number, everyMs: number): { results(): Promise<ProbeResults> } {
    let lateFollows = 0;
    const loop = (async () => {
      const runs: Promise<ProbeRun>[] = [];
      for (let i = 0; i < count; i++) {
        const t = now();
        runs.push(this.probe(() => lateFollows++));
        await sleep(Math.max(0, everyMs - (now() - t)));
      }
      return Promise.all(runs);
    })();
    return { results: async () => summarize(await loop, lateFollows) };
  }

  /** One probe: its delay in ms; neither delay nor error when its line was not readable in time. Never rejects. */
  private async probe(late: () => void): Promise<ProbeRun> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), PROBE_TIMEOUT_MS);
    let id: string | undefined;
    let open: number | undefined;
    try {
      const posted = now();
      const orderId = await this.coordinator.api.enqueue({ spec: { command: ["log-probe", String(PROBE_HOLD_MS)] }, selector: "pool=bench", priority: 1000 });
      id = orderId;
      const printed = new Promise<{ t: number; line: string } | undefined>((resolve) => {
        abort.signal.addEventListener("abort", () => resolve(undefined), { once: true });
        const known = this.printed.get(orderId);
        if (known) resolve(known);
        else this.waiting.set(orderId, resolve);
      });
      const { url, token } = this.coordinator.api;
      const response = await fetch(`${url}/v1/work-orders/${id}/log?follow=true`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
      if (!response.ok || !response.body) throw new Error(`follow: ${response.status}`);
      open = now() - posted;
      // Only now may the probe print (whichever agent process holds it, or will).
      if (this.printed.has(orderId)) late();
      for (const child of this.agents.children) child.send({ type: "print", workOrderId: orderId });
      // The line is ASCII without quotes or backslashes, so it shows as is inside the events' JSON.
      const marker = `probe ${id} `;
      const decoder = new TextDecoder();
      let seen = "";
      let readable: number | undefined;
      for await (const chunk of response.body) {
        seen += decoder.decode(chunk as Uint8Array, { stream: true });
        if (seen.includes(marker)) {
          readable = now();
          break;
        }
        if (seen.includes("event: end")) break;
      }
      const at = readable === undefined ? undefined : (await printed)?.t;
      return at === undefined ? { open } : { delay: readable! - at, open };
    } catch (error) {
      return abort.signal.aborted ? { open } : { error: error instanceof Error ? error.message : String(error), open };
    } finally {
      clearTimeout(timer);
      abort.abort();
      if (id !== undefined) this.waiting.delete(id);
    }
  }
}

function summarize(runs: ProbeRun[], lateFollows: number): ProbeResults {
  const delays = runs.flatMap((r) => (r.delay === undefined ? [] : [r.delay])).sort((a, b) => a - b);
  const errors = runs.flatMap((r) => (r.error === undefined ? [] : [r.error]));
  const opens = runs.flatMap((r) => (r.open === undefined ? [] : [r.open])).sort((a, b) => a - b);
  return { sent: runs.length, delays, missing: runs.length - delays.length - errors.length, lateFollows, errors, opens };
}
