// A coordinator and agents as separate processes on loopback, with an admin token and a CI client.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LogEvent, WorkOrderView } from "../../protocol/api.ts";
import type { JobState, WorkOrderState } from "../../protocol/states.ts";
import { createPostgresDatabase, dropPostgresDatabase, type Kind } from "./databases.ts";
import { jobfleet, type JobfleetProcess } from "./processes.ts";

export type Ended = { state: WorkOrderState | JobState; exitCode: number | null; log: string; jobs: string[] };

/** An exec work order's spec running `script` with sh. */
export const sh = (script: string) => ({ spec: { command: ["sh", "-c", script] } });

/** A coordinator process's URL, once it listens. */
export async function listening(coordinator: JobfleetProcess): Promise<string> {
  return ((await coordinator.waitFor(/"url":"(http:\/\/[^"]+)"/)) as [string, string])[1];
}

/** A client with the admin token that a coordinator on an empty database prints once. */
export async function adminOf(coordinator: JobfleetProcess, url: string): Promise<Api> {
  const [, token] = (await coordinator.waitFor(/^\s+(jft_\S+)$/m)) as [string, string];
  return new Api(url, token);
}

export class Api {
  constructor(
    readonly url: string,
    readonly token: string,
  ) {}

  async call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: (text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text) as T };
  }

  /** Makes a token (the caller must be admin). */
  async mintToken(name: string, role: string): Promise<string> {
    return (await this.call<{ token: string }>("POST", "/v1/tokens", { name, role })).body.token;
  }

  async enqueue(body: Record<string, unknown>): Promise<WorkOrderView> {
    const { status, body: order } = await this.call<WorkOrderView>("POST", "/v1/work-orders", body);
    if (status !== 201) throw new Error(`enqueue failed: ${status} ${JSON.stringify(order)}`);
    return order;
  }

  async get(id: string): Promise<WorkOrderView> {
    return (await this.call<WorkOrderView>("GET", `/v1/work-orders/${id}`)).body;
  }

  /** Follows a work order's log until it ends (or `until` matches the log so far). */
  async follow(id: string, until?: RegExp): Promise<Ended> {
    const abort = new AbortController();
    const response = await fetch(`${this.url}/v1/work-orders/${id}/log?follow=true`, {
      headers: { authorization: `Bearer ${this.token}` },
      signal: abort.signal,
    });
    if (!response.ok) throw new Error(`log stream of ${id} answered ${response.status}: ${await response.text()}`);
    const decoder = new TextDecoder();
    let buffer = "";
    const ended: Ended = { state: "pending", exitCode: null, log: "", jobs: [] };
    const read = async (): Promise<boolean> => {
      for await (const chunk of response.body!) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          const data = buffer.slice(0, end).split("\n").find((l) => l.startsWith("data: "));
          buffer = buffer.slice(end + 2);
          if (!data) continue;
          const event = JSON.parse(data.slice(6)) as LogEvent;
          if (event.type === "job") ended.jobs.push(event.jobId);
          if (event.type === "log") ended.log += event.data;
          if (event.type === "end") {
            ended.state = event.state;
            ended.exitCode = event.exitCode;
            return true;
          }
          if (until?.test(ended.log)) return true;
        }
      }
      return false;
    };
    const done = await read().finally(() => abort.abort());
    if (!done) throw new Error(`log stream of ${id} ended early`);
    if (ended.state === "pending") ended.state = (await this.get(id)).state;
    return ended;
  }
}

export type Fleet = {
  /** The first coordinator. */
  coordinator: JobfleetProcess;
  /** Every coordinator (replicas over one Postgres database). */
  coordinators: JobfleetProcess[];
  /** SIGKILLs coordinator `i` and starts it again on the same port and database. */
  restartCoordinator(i?: number): Promise<void>;
  /** The first coordinator's URL; `urls` has each one's. */
  url: string;
  urls: string[];
  admin: Api;
  ci: Api;
  /** A CI client of coordinator `i`. */
  ciAt(i: number): Api;
  agents: Map<string, JobfleetProcess>;
  /** Starts an agent dialling the given coordinators (by index; default the first). */
  startAgent(name: string, flags: string[], coordinators?: number[]): Promise<JobfleetProcess>;
  stop(): Promise<void>;
};

export type FleetOptions = { heartbeatSeconds?: number; leaseSeconds?: number; replicas?: number };

export async function startFleet(kind: Kind, options: FleetOptions = {}): Promise<Fleet> {
  const dir = mkdtempSync(join(tmpdir(), "jobfleet-e2e-"));
  const pg = kind === "postgres" ? await createPostgresDatabase() : undefined;
  const heartbeat = String(options.heartbeatSeconds ?? 2);
  const lease = String(options.leaseSeconds ?? 30);
  const launch = (listen: string) =>
    jobfleet(["coordinator", "--listen", listen, "--data-dir", join(dir, "db"), "--heartbeat-seconds", heartbeat, "--lease-seconds", lease], {
      DATABASE_URL: pg?.toString(),
    });
  const coordinators = [launch("127.0.0.1:0")];
  const urls = [await listening(coordinators[0]!)];
  const admin = await adminOf(coordinators[0]!, urls[0]!);
  for (let i = 1; i < (options.replicas ?? 1); i++) {
    coordinators.push(launch("127.0.0.1:0"));
    urls.push(await listening(coordinators[i]!));
  }
  const ciToken = await admin.mintToken("e2e-ci", "ci");
  // Given as a file, as the README advises: other local users see a command line.
  const agentTokenFile = join(dir, "agent-token");
  writeFileSync(agentTokenFile, `${await admin.mintToken("e2e-agents", "agent")}\n`, { mode: 0o600 });
  const agents = new Map<string, JobfleetProcess>();
  return {
    get coordinator() {
      return coordinators[0]!;
    },
    coordinators,
    async restartCoordinator(i = 0) {
      await coordinators[i]!.stop("SIGKILL");
      coordinators[i] = launch(new URL(urls[i]!).host);
      await coordinators[i]!.waitFor(/"msg":"coordinator listening"/);
    },
    url: urls[0]!,
    urls,
    admin,
    ci: new Api(urls[0]!, ciToken),
    ciAt: (i) => new Api(urls[i]!, ciToken),
    agents,
    async startAgent(name, flags, at = [0]) {
      const url = at.map((i) => urls[i]).join(",");
      const agent = jobfleet(["agent", "--url", url, "--token-file", agentTokenFile, "--name", name, "--cancel-grace", "2", ...flags]);
      agents.set(name, agent);
      await agent.waitForLog("connected");
      return agent;
    },
    async stop() {
      await Promise.all([...agents.values()].map((a) => a.stop("SIGKILL")));
      await Promise.all(coordinators.map((c) => c.stop()));
      if (pg) await dropPostgresDatabase(pg);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
