// The fault soak: work orders run through several agents and two coordinator replicas while
// agents and coordinators are killed (SIGKILL) and Postgres is restarted at random, seeded,
// moments. Then it checks what jobfleet promises: every work order ended exactly once, no two
// attempts of one work order overlapped (a per-order flock proves it, even across SIGKILL), every
// log is whole and in order, and nothing is left claimed or running. Agents hold jobs ahead of
// their capacity, so the reaper also returns a killed agent's jobs that never began.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { ACTIVE_JOB_STATES } from "../../coordinator/sql/active-jobs.ts";
import { adminOf, Api, listening } from "../support/fleet.ts";
import { type Cluster, startCluster } from "../support/pg-cluster.ts";
import { jobfleet, type JobfleetProcess } from "../support/processes.ts";

export type SoakOptions = {
  orders: number;
  agents: number;
  capacity: number;
  /** Jobs each agent holds ahead of its capacity: the reaper returns them when it is killed. */
  prefetch: number;
  seed: number;
  lines: number;
  log?: (line: string) => void;
};

export type SoakReport = {
  seed: number;
  orders: number;
  succeeded: number;
  kills: { agent: number; coordinator: number; postgres: number };
  retries: number;
  lost: number;
  /** Jobs given back before they began. */
  returned: number;
  adopted: number;
  overlaps: string[];
  problems: string[];
  seconds: number;
};

/** mulberry32: a small seeded generator, so a failing run's faults can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Marks are "<work order> <attempt> start|end <ns>" lines, appended atomically (O_APPEND, short).
// An attempt killed with its agent leaves no end mark, so the flock is what proves no overlap.
const JOB = (dir: string, lines: number) => `
echo "$JOBFLEET_WORK_ORDER_ID $JOBFLEET_ATTEMPT start $(date +%s%N)" >> "${dir}/marks"
exec 9>"${dir}/$JOBFLEET_WORK_ORDER_ID.lock"
if ! flock -n 9; then echo "$JOBFLEET_WORK_ORDER_ID attempt $JOBFLEET_ATTEMPT" >> "${dir}/overlaps"; exit 3; fi
i=0
while [ $i -lt ${lines} ]; do i=$((i+1)); echo "line $i"; [ $((i % 10)) = 0 ] && sleep 0.3; done
echo "$JOBFLEET_WORK_ORDER_ID $JOBFLEET_ATTEMPT end $(date +%s%N)" >> "${dir}/marks"
`;

/** Attempts of one work order whose start and end marks overlap in time. */
export function overlappingMarks(marks: string): string[] {
  const spans = new Map<string, { start?: bigint; end?: bigint }>();
  for (const line of marks.split("\n").filter(Boolean)) {
    const [order, attempt, kind, at] = line.split(" ") as [string, string, "start" | "end", string];
    const key = `${order} ${attempt}`;
    spans.set(key, { ...spans.get(key), [kind]: BigInt(at) });
  }
  const byOrder = new Map<string, { attempt: string; start: bigint; end: bigint }[]>();
  for (const [key, { start, end }] of spans) {
    if (start === undefined || end === undefined) continue;
    const [order, attempt] = key.split(" ") as [string, string];
    byOrder.set(order, [...(byOrder.get(order) ?? []), { attempt, start, end }]);
  }
  const found: string[] = [];
  for (const [order, attempts] of byOrder) {
    attempts.sort((a, b) => (a.start < b.start ? -1 : 1));
    for (let i = 1; i < attempts.length; i++) {
      if (attempts[i]!.start < attempts[i - 1]!.end) found.push(`${order}: attempts ${attempts[i - 1]!.attempt} and ${attempts[i]!.attempt}`);
    }
  }
  return found;
}

const expectedLog = (lines: number) => Array.from({ length: lines }, (_, i) => `line ${i + 1}\n`).join("");

class Soak {
  private readonly dir = mkdtempSync(join(tmpdir(), "jobfleet-soak-"));
  private readonly rand: () => number;
  private cluster!: Cluster;
  private readonly coordinators: JobfleetProcess[] = [];
  private readonly ports: string[] = [];
  private readonly agents: JobfleetProcess[] = [];
  private agentToken = "";
  private apis: Api[] = [];
  private faults = true;
  /** Resolves once one fault of each kind has happened. */
  readonly everyKind: Promise<void>;
  private everyKindDone!: () => void;
  readonly kills = { agent: 0, coordinator: 0, postgres: 0 };

  constructor(private readonly options: SoakOptions) {
    this.rand = random(options.seed);
    this.everyKind = new Promise((resolve) => (this.everyKindDone = resolve));
    writeFileSync(join(this.dir, "overlaps"), "");
    writeFileSync(join(this.dir, "marks"), "");
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  private coordinator(listen: string): JobfleetProcess {
    return jobfleet(["coordinator", "--listen", listen, "--heartbeat-seconds", "1", "--lease-seconds", "4"], {
      DATABASE_URL: this.cluster.url,
    });
  }

  private agent(i: number): JobfleetProcess {
    const urls = i % 2 === 0 ? this.ports : [...this.ports].reverse();
    return jobfleet([
      "agent",
      "--url",
      urls.map((p) => `ws://${p}/v1/agent`).join(","),
      "--token",
      this.agentToken,
      "--name",
      `soak-${i}`,
      "--labels",
      "pool=soak",
      "--capacity",
      String(this.options.capacity),
      "--prefetch",
      String(this.options.prefetch),
      "--cancel-grace",
      "1",
      "--log-level",
      "warn",
    ]);
  }

  async start(): Promise<void> {
    this.cluster = await startCluster();
    for (let i = 0; i < 2; i++) {
      const c = this.coordinator("127.0.0.1:0");
      this.coordinators.push(c);
      this.ports.push(new URL(await listening(c)).host);
    }
    const admin = await adminOf(this.coordinators[0]!, `http://${this.ports[0]}`);
    const ci = await admin.mintToken("soak-ci", "ci");
    this.agentToken = await admin.mintToken("soak-agent", "agent");
    this.apis = this.ports.map((p) => new Api(`http://${p}`, ci));
    for (let i = 0; i < this.options.agents; i++) this.agents.push(this.agent(i));
  }

  /** Calls the API on whichever replica answers, retrying through outages and rate limits. */
  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const api = this.apis[attempt % this.apis.length]!;
      try {
        const { status, body: result } = await api.call<T>(method, path, body);
        if (status < 300) return result;
        if (status !== 503 && status !== 429) throw new Error(`${method} ${path}: ${status} ${JSON.stringify(result)}`);
      } catch (error) {
        if (!(error instanceof TypeError)) throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Enqueues through faults; an idempotency key makes a retried POST (its answer lost) enqueue once. */
  async enqueue(): Promise<void> {
    const spec = { command: ["sh", "-c", JOB(this.dir, this.options.lines)] };
    const body = (i: number) => ({
      spec,
      selector: "pool=soak",
      maxAttempts: 25,
      retryBackoffSeconds: 0,
      idempotencyKey: `soak-${this.options.seed}-${i}`,
    });
    for (let i = 0; i < this.options.orders; i += 25) {
      const batch = Array.from({ length: Math.min(25, this.options.orders - i) }, (_, k) => i + k);
      await Promise.all(batch.map((n) => this.call("POST", "/v1/work-orders", body(n))));
    }
  }

  private pause(min: number, max: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, min + this.rand() * (max - min)));
  }

  /** One fault of each kind first (in seeded order), then seeded random ones until told to stop. */
  async inject(): Promise<void> {
    const kinds = ["agent", "coordinator", "postgres"] as const;
    const first = [...kinds].sort(() => this.rand() - 0.5);
    for (let n = 0; this.faults; n++) {
      await this.pause(1500, 3000);
      if (!this.faults) return;
      const kind = first[n] ?? kinds[Math.floor(this.rand() * kinds.length)]!;
      await this.fault[kind]();
      this.kills[kind]++;
      if (n === kinds.length - 1) this.everyKindDone();
    }
  }

  private readonly fault = {
    agent: () => this.agentFault(),
    coordinator: () => this.coordinatorFault(),
    postgres: () => this.postgresFault(),
  };

  private async agentFault(): Promise<void> {
    const i = Math.floor(this.rand() * this.agents.length);
    this.log(`soak: SIGKILL agent soak-${i}`);
    await this.agents[i]!.stop("SIGKILL");
    await this.pause(200, 1000);
    this.agents[i] = this.agent(i);
  }

  private async coordinatorFault(): Promise<void> {
    const i = Math.floor(this.rand() * this.coordinators.length);
    this.log(`soak: SIGKILL coordinator ${i}`);
    await this.coordinators[i]!.stop("SIGKILL");
    await this.pause(300, 1200);
    this.coordinators[i] = this.coordinator(this.ports[i]!);
    await listening(this.coordinators[i]!).catch(() => {});
  }

  private async postgresFault(): Promise<void> {
    this.log("soak: restarting Postgres");
    this.cluster.stop();
    await this.pause(300, 1500);
    this.cluster.start();
  }

  async waitForAll(): Promise<void> {
    const db = postgres(this.cluster.url, { max: 1, onnotice: () => {} });
    try {
      for (;;) {
        const [row] = await db`SELECT count(*)::int AS open FROM work_orders WHERE state IN ('pending', 'claimed', 'running')`.catch(
          () => [{ open: -1 }],
        );
        if (row!.open === 0) return;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    } finally {
      await db.end();
    }
  }

  stopFaults(): void {
    this.faults = false;
  }

  async verify(): Promise<Omit<SoakReport, "seed" | "kills" | "seconds">> {
    const db = postgres(this.cluster.url, { max: 1, onnotice: () => {} });
    const problems: string[] = [];
    try {
      const orders = await db<{ id: string; state: string; ends: number }[]>`
        SELECT wo.id::text AS id, wo.state::text AS state,
          (SELECT count(*)::int FROM work_order_events e WHERE e.work_order_id = wo.id
             AND e.to_state IN ('succeeded', 'failed', 'cancelled', 'timed_out')) AS ends
        FROM work_orders wo ORDER BY wo.id`;
      if (orders.length !== this.options.orders) problems.push(`${orders.length} work orders for ${this.options.orders} enqueued`);
      for (const o of orders) {
        if (o.state !== "succeeded") problems.push(`work order ${o.id} ended ${o.state}`);
        if (o.ends !== 1) problems.push(`work order ${o.id} ended ${o.ends} times`);
      }
      const open = await db.unsafe<{ n: number }[]>(`SELECT count(*)::int AS n FROM jobs WHERE state IN (${ACTIVE_JOB_STATES})`);
      if (open[0]!.n !== 0) problems.push(`${open[0]!.n} jobs left claimed, starting or running`);
      const logs = await db<{ id: string; log: string }[]>`
        SELECT wo.id::text AS id, coalesce(string_agg(l.data, '' ORDER BY l."offset"), '') AS log
        FROM work_orders wo LEFT JOIN job_logs l ON l.job_id = wo.latest_job_id
        WHERE wo.state = 'succeeded' GROUP BY wo.id`;
      const expected = expectedLog(this.options.lines);
      for (const l of logs) if (l.log !== expected) problems.push(`work order ${l.id}: log of ${l.log.length} characters is not whole and in order`);
      const [jobs] = await db<{ total: number; lost: number; returned: number }[]>`
        SELECT count(*)::int AS total, count(*) FILTER (WHERE state = 'lost')::int AS lost,
          count(*) FILTER (WHERE state = 'returned')::int AS returned FROM jobs`;
      const overlaps = [
        ...readFileSync(join(this.dir, "overlaps"), "utf8").split("\n").filter(Boolean),
        ...overlappingMarks(readFileSync(join(this.dir, "marks"), "utf8")),
      ];
      return {
        orders: orders.length,
        succeeded: orders.filter((o) => o.state === "succeeded").length,
        retries: jobs!.total - jobs!.returned - orders.length,
        lost: jobs!.lost,
        returned: jobs!.returned,
        adopted: 0,
        overlaps,
        problems,
      };
    } finally {
      await db.end();
    }
  }

  async stop(): Promise<void> {
    this.faults = false;
    await Promise.all([...this.agents, ...this.coordinators].map((p) => p.stop("SIGKILL")));
    this.cluster?.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const started = Date.now();
  const soak = new Soak(options);
  try {
    await soak.start();
    const faults = soak.inject();
    await soak.enqueue();
    await soak.everyKind;
    await soak.waitForAll();
    soak.stopFaults();
    await faults;
    await soak.waitForAll();
    const result = await soak.verify();
    return { seed: options.seed, kills: { ...soak.kills }, seconds: Math.round((Date.now() - started) / 1000), ...result };
  } finally {
    await soak.stop();
  }
}

export function summary(report: SoakReport): string {
  const { kills } = report;
  return (
    `soak: seed=${report.seed} orders=${report.orders} succeeded=${report.succeeded} ` +
    `kills: agent=${kills.agent} coordinator=${kills.coordinator} postgres=${kills.postgres} ` +
    `retries=${report.retries} lost=${report.lost} returned=${report.returned} adopted=${report.adopted} overlaps=${report.overlaps.length} ` +
    `problems=${report.problems.length} seconds=${report.seconds}`
  );
}
