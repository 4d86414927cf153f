// A coordinator on in-memory PGlite in the test's own process, for suites that drive real `Agent`s
// over loopback WebSockets with an adapter of their own, and call the HTTP API as CI would.
import { pino } from "pino";
import { afterAll, beforeAll } from "vitest";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, type CoordinatorOptions, startCoordinator } from "../../coordinator/coordinator.ts";
import type { Labels } from "../../protocol/selector.ts";

export type InProcess = {
  coordinator: Coordinator;
  /**
   * A started queue-mode agent of capacity 1 whose every work order runs through `adapter`, dialling
   * `url` (the coordinator's own by default); stopped after the suite (its jobs get 1 s to end).
   */
  agent(options: { name: string; labels: Labels; adapter: Adapter<unknown>; prefetch?: number; url?: string }): Agent;
  ciToken: string;
  /** The API with a ci token; the parsed JSON answer. */
  api<T>(method: string, path: string, body?: unknown): Promise<T>;
  /** The work order's state, read through the API. */
  stateOf(id: string): Promise<WorkOrderView["state"]>;
};

const logger = pino({ level: "silent" });

/**
 * Starts the coordinator (with `options` over the defaults) before the suite's tests and stops it, with the agents it started, after
 * the suite's own `afterAll`s (which may end the runs its agents hold); the getter returns it.
 */
export function useInProcessCoordinator(options: Partial<CoordinatorOptions> = {}): () => InProcess {
  let ready: InProcess | undefined;
  const agents: Agent[] = [];
  beforeAll(async () => {
    const coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger, ...options });
    const agentToken = (await tokenCreate(coordinator.db, "agents", "agent")).token;
    const ciToken = (await tokenCreate(coordinator.db, "ci", "ci")).token;
    ready = {
      coordinator,
      ciToken,
      agent: ({ name, labels, adapter, prefetch, url = coordinator.agentUrl }) => {
        const agent = new Agent({
          urls: [url],
          token: agentToken,
          name,
          labels,
          capacity: 1,
          prefetch,
          mode: "queue",
          version: "test",
          cancelGraceMs: 100,
          logger,
          adapters: () => adapter,
        });
        agent.start();
        agents.push(agent);
        return agent;
      },
      api: async <T>(method: string, path: string, body?: unknown) => {
        const response = await fetch(`${coordinator.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${ciToken}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return (await response.json()) as T;
      },
      stateOf: async (id) => (await ready!.api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).state,
    };
  });
  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.stop(1000)));
    await ready?.coordinator.stop();
  });
  return () => {
    if (!ready) throw new Error("the coordinator is not started");
    return ready;
  };
}
