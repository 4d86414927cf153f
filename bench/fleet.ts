// A jobfleet under test: one coordinator process (or several on one database), agents spread over
// several agent processes, and a CI client for its HTTP API (single and bulk enqueue).
import { Agent as HttpAgent, request } from "node:http";
import type { DatabaseConfig } from "../coordinator/db/database.ts";
import type { AgentsConfig, AgentsGo } from "./agents-process.ts";
import type { CoordinatorConfig, CoordinatorReady } from "./coordinator-process.ts";
import { processCpuSeconds } from "./cpu.ts";
import { Child, type ChildEntry } from "./children.ts";
import { now } from "./support.ts";
import { processWrites } from "./writes.ts";

/** The work order every scenario enqueues: an ordinary exec work order the bench's agents run as a no-op. */
export const NOOP_ORDER = { spec: { command: ["true"] }, selector: "pool=bench" };
export const PROBE_ORDER = { spec: { command: ["probe"] }, selector: "pool=bench" };
export const BULK_SIZE = 10_000;

/** Agent processes × agents in each, each agent with `capacity` slots and `prefetch` jobs held ahead (default 0). */
export type FleetShape = { processes: number; perProcess: number; capacity: number; prefetch?: number };

export class CoordinatorProcess {
  private constructor(
    readonly child: Child,
    readonly ready: CoordinatorReady,
  ) {}

  /** `entry`: the child to run, coordinator-process or one that answers the same messages and more. */
  static async start(
    database: DatabaseConfig,
    options: Omit<CoordinatorConfig, "database"> = {},
    entry: ChildEntry = "coordinator-process",
  ): Promise<CoordinatorProcess> {
    const child = new Child(entry, { database, ...options } satisfies CoordinatorConfig);
    try {
      return new CoordinatorProcess(child, await child.next<CoordinatorReady>("ready"));
    } catch (error) {
      // No ready in time: the caller has nothing to stop, so stop it here.
      await child.stop(3_000);
      throw error;
    }
  }

  private client?: Api;

  get api(): Api {
    return (this.client ??= new Api(this.ready.url, this.ready.ciToken));
  }

  query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
    return this.child.request<T[]>({ type: "query", sql, params });
  }

  usage(): Promise<{ rss: number; cpu: number }> {
    return this.child.request({ type: "usage" });
  }

  stop(): Promise<void> {
    return this.child.stop();
  }
}

/** Agent processes booting while a coordinator starts: `fleet` once booted, `stop` stops whatever booted. */
export type BootingAgents = { fleet: Promise<AgentFleet>; stop(): Promise<void> };

/** `processes` agent processes of `perProcess` agents each, booting; once booted they dial on `go`. */
export function bootAgents(shape: FleetShape, prefix = "bench"): BootingAgents {
  const fleet = startAgents(shape, prefix);
  fleet.catch(() => {}); // the caller awaits it; a failed boot has stopped its own processes
  return { fleet, stop: () => fleet.then((agents) => agents.stop(), () => {}) };
}

async function startAgents({ processes, perProcess, capacity, prefetch = 0 }: FleetShape, prefix: string): Promise<AgentFleet> {
  const children = Array.from(
    { length: processes },
    (_, p) => new Child("agents-process", { prefix: `${prefix}-${p}`, count: perProcess, capacity, prefetch } satisfies AgentsConfig),
  );
  try {
    await Promise.all(children.map((child) => child.next("ready")));
  } catch (error) {
    // One failed to boot: stop the others too (the caller has no fleet to stop).
    await Promise.all(children.map((child) => child.stop(3_000)));
    throw error;
  }
  return new AgentFleet(children);
}

/** Where agents dial: a coordinator process, or the stand-in for one. */
export type Dialled = { readonly ready: Pick<CoordinatorReady, "agentUrl" | "agentToken"> };

export class AgentFleet {
  constructor(readonly children: Child[]) {}

  /** Every agent dials now. With several coordinators (on one database), agent process p dials coordinator p mod n, and only that one. */
  go(coordinators: Dialled | readonly Dialled[]): void {
    const list: readonly Dialled[] = "ready" in coordinators ? [coordinators] : coordinators;
    if (list.length === 0) throw new RangeError("go: no coordinator");
    for (const [p, child] of this.children.entries()) {
      const { agentUrl, agentToken } = list[p % list.length]!.ready;
      child.send({ type: "go", urls: [agentUrl], token: agentToken } satisfies AgentsGo);
    }
  }

  /** Calls `listener(workOrderId, t)` for every probe that starts. */
  onProbe(listener: (workOrderId: string, t: number) => void): () => void {
    const offs = this.children.map((child) =>
      child.on((message) => {
        if (message.type === "started") listener(String(message.workOrderId), Number(message.t));
      }),
    );
    return () => offs.forEach((off) => off());
  }

  /** Jobs the agents' adapters have started so far (retries counted again). */
  async ran(): Promise<number> {
    const all = await Promise.all(this.children.map((child) => child.request<number>({ type: "ran" })));
    return all.reduce((sum, n) => sum + n, 0);
  }

  async rss(): Promise<number> {
    const all = await Promise.all(this.children.map((child) => child.request<{ rss: number }>({ type: "usage" })));
    return all.reduce((sum, u) => sum + u.rss, 0);
  }

  /** CPU seconds of all agent processes so far. */
  cpu(): number {
    return this.children.reduce((sum, child) => sum + processCpuSeconds(child.process.pid), 0);
  }

  /** Write calls of all agent processes so far, less the replies they wrote to the bench's requests. */
  writes(): number {
    return this.children.reduce((sum, child) => sum + processWrites(child.process.pid) - child.requests, 0);
  }

  async stop(): Promise<void> {
    await Promise.all(this.children.map((child) => child.stop()));
  }
}

/** A GET through `agent`, its answer read and dropped. */
export function get(agent: HttpAgent, url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    request(url, { agent }, (response) => response.resume().on("end", resolve))
      .on("error", reject)
      .end();
  });
}

export class Api {
  // node:http with kept-alive sockets, not fetch: with fetch, 64 clients in one process spent more
  // CPU than the coordinator serving them, so the enqueue scenario measured the client.
  private readonly agent = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  /** Requests on the kept-alive connections that had to open one (none was free). */
  opened = 0;

  constructor(
    readonly url: string,
    readonly token: string,
  ) {}

  /** `fresh`: on a connection of its own, opened for it. */
  private post(path: string, body: unknown, { fresh = false } = {}): Promise<{ status: number; body: any }> {
    const payload = JSON.stringify(body);
    const headers = { authorization: `Bearer ${this.token}`, "content-type": "application/json", "content-length": Buffer.byteLength(payload) };
    return new Promise((resolve, reject) => {
      const req = request(`${this.url}${path}`, { method: "POST", agent: fresh ? false : this.agent, headers }, (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => (text += chunk));
        response.on("end", () => {
          if (!fresh && !req.reusedSocket) this.opened++;
          resolve({ status: response.statusCode!, body: text.startsWith("{") ? JSON.parse(text) : text });
        });
        response.on("error", reject);
      });
      req.on("error", reject);
      req.end(payload);
    });
  }

  /** How many agents are connected (GET /v1/agents). */
  async connected(): Promise<number> {
    const response = await fetch(`${this.url}/v1/agents?connected=true&limit=500`, { headers: { authorization: `Bearer ${this.token}` } });
    return ((await response.json()) as { items: unknown[] }).items.length;
  }

  /**
   * Opens `sockets` kept-alive connections for the requests to come: as many requests at once that
   * the coordinator answers without the database (no token: 401), so that none is a commit.
   */
  async warm(sockets: number): Promise<void> {
    await Promise.all(Array.from({ length: sockets }, () => get(this.agent, `${this.url}/v1/agents`)));
  }

  /** One work order through POST /v1/work-orders (`fresh`: on a connection of its own); its id. */
  async enqueue(order: unknown, options: { fresh?: boolean } = {}): Promise<string> {
    const { status, body } = await this.post("/v1/work-orders", order, options);
    if (status !== 201) throw new Error(`enqueue: ${status} ${JSON.stringify(body)}`);
    return String(body.id);
  }

  /** Whether the coordinator has POST /v1/work-orders/bulk (it is new). */
  async hasBulk(): Promise<boolean> {
    const { status } = await this.post("/v1/work-orders/bulk", { workOrders: [] });
    return status !== 404;
  }

  /** Many copies of `order` through POST /v1/work-orders/bulk, `BULK_SIZE` per request, one request at a time. */
  async enqueueBulk(order: unknown, count: number): Promise<void> {
    for (let done = 0; done < count; done += BULK_SIZE) {
      const n = Math.min(BULK_SIZE, count - done);
      const { status, body } = await this.post("/v1/work-orders/bulk", { workOrders: Array.from({ length: n }, () => order) });
      if (status !== 201 || body.created !== n) throw new Error(`bulk enqueue: ${status} ${JSON.stringify(body).slice(0, 300)}`);
    }
  }

  /** `count` single POSTs from `clients` concurrent clients. */
  async enqueueConcurrently(order: unknown, count: number, clients: number): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        while (next < count) {
          next++;
          await this.enqueue(order);
        }
      }),
    );
  }

  /** Bulk when the coordinator has it, else single POSTs from 64 clients; says which. */
  async enqueueMany(order: unknown, count: number): Promise<{ bulk: boolean; ms: number }> {
    const bulk = await this.hasBulk();
    const start = now();
    if (bulk) await this.enqueueBulk(order, count);
    else await this.enqueueConcurrently(order, count, 64);
    return { bulk, ms: now() - start };
  }
}
