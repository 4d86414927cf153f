// Child entry: K idle in-process agents on real WebSockets (scenario 5, fleet size). They claim
// like any agent, but nothing is ever enqueued for their labels, so they only connect and
// heartbeat. They boot idle and dial on `go`: all at once, or at most `inFlight` at a time (the
// next dials when one is welcomed, or gives up), which paces them to what the coordinator takes
// without overflowing its accept queue. Their logger counts what the agents report (welcomed,
// connection errors, closes and redials), so the parent can see how a connect storm went without
// looking inside the agent; `status` answers those counts, the times of the first and last
// welcome, and this process's RSS.
import { pino } from "pino";
import { type BenchAgentsOptions, benchAgents, succeeded } from "./bench-agents.ts";
import { childConfig, now, send, serve } from "./support.ts";

export type IdleAgentsConfig = Pick<BenchAgentsOptions, "urls" | "token" | "prefix" | "count" | "labels"> & {
  /** At most this many agents dialled and not yet welcomed at a time; all at once when absent or 0. */
  inFlight?: number;
};

export type IdleAgentsStatus = {
  started: number;
  /** Agents welcomed and not disconnected since. */
  connected: number;
  /** Welcomes received, reconnections included. */
  welcomes: number;
  /** Connection errors by message, and closes (before or after a welcome) by close code. */
  errors: Record<string, number>;
  closes: Record<string, number>;
  /** Agents that gave up (fatal close). */
  failed: number;
  /** `now()` of the first and the last welcome (0 before any). */
  firstWelcomeAt: number;
  lastWelcomeAt: number;
  rss: number;
};

const config = childConfig<IdleAgentsConfig>();
const connected = new Set<string>();
/** Agents welcomed at least once, or given up: their dial is over. */
const settled = new Set<string>();
const status: IdleAgentsStatus = { started: 0, connected: 0, welcomes: 0, errors: {}, closes: {}, failed: 0, firstWelcomeAt: 0, lastWelcomeAt: 0, rss: 0 };
const bump = (counts: Record<string, number>, key: string) => (counts[key] = (counts[key] ?? 0) + 1);

// Only events are logged (nothing per heartbeat), so reading every line costs nothing while idle.
const logger = pino(
  { level: "info" },
  {
    write(line: string) {
      const entry = JSON.parse(line) as { msg?: string; agent?: string; error?: string; code?: number; level?: number };
      const agent = entry.agent ?? "";
      switch (entry.msg) {
        case "connected":
          connected.add(agent);
          dialled(agent);
          status.welcomes++;
          status.lastWelcomeAt = now();
          status.firstWelcomeAt ||= status.lastWelcomeAt;
          return;
        case "connection error":
          bump(status.errors, String(entry.error).slice(0, 120));
          return;
        case "disconnected; redialling":
          connected.delete(agent);
          bump(status.closes, String(entry.code));
          return;
        default:
          if (entry.level !== undefined && entry.level >= 50) {
            connected.delete(agent);
            status.failed++;
            dialled(agent);
            bump(status.errors, `fatal: ${entry.msg}`);
          }
      }
    },
  },
);

// The adapter is never called: no work order matches these agents.
const agents = benchAgents({ ...config, capacity: 1, logger, start: async () => succeeded() });
for (const agent of agents) agent.stopped.catch(() => {}); // counted through the logger

let stopping = false;

/** Starts agents while fewer than `inFlight` are dialling (all of them without a window). */
function dialMore(): void {
  const window = config.inFlight || agents.length;
  while (!stopping && status.started < agents.length && status.started - settled.size < window) agents[status.started++]!.start();
}

function dialled(agent: string): void {
  if (settled.has(agent)) return;
  settled.add(agent);
  // Not from inside the agent's own logging call.
  setImmediate(dialMore);
}

serve({
  go: dialMore,
  status: (): IdleAgentsStatus => ({ ...status, connected: connected.size, rss: process.memoryUsage().rss }),
  stop: async () => {
    stopping = true;
    await Promise.all(agents.slice(0, status.started).map((agent) => agent.stop(1_000)));
    process.exit(0);
  },
});
send({ type: "ready" });
