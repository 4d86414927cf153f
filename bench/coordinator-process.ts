// Child entry: one coordinator (Postgres or in-memory PGlite) with a CI and an agent token. Sends
// `ready {url, agentUrl, ciToken, agentToken}`; answers `query {sql}` (for PGlite, whose database
// lives in here), `usage` (RSS and CPU seconds) and `stop`.
import { pino } from "pino";
import { tokenCreate } from "../coordinator/auth/tokens.ts";
import { startCoordinator } from "../coordinator/coordinator.ts";
import type { DatabaseConfig } from "../coordinator/db/database.ts";
import { childConfig, cpuSeconds, send, serve } from "./support.ts";

export type CoordinatorConfig = { database: DatabaseConfig; heartbeatSeconds?: number; leaseSeconds?: number };
export type CoordinatorReady = { type: "ready"; url: string; agentUrl: string; ciToken: string; agentToken: string };

const config = childConfig<CoordinatorConfig>();
const coordinator = await startCoordinator({
  database: config.database,
  host: "127.0.0.1",
  port: 0,
  heartbeatSeconds: config.heartbeatSeconds ?? 10,
  leaseSeconds: config.leaseSeconds ?? 30,
  // Limited, so the check runs as it would in use, but far above what the scenarios ask.
  requestsPerSecond: 1_000_000,
  logger: pino({ level: "silent" }),
});
const ciToken = (await tokenCreate(coordinator.db, "bench-ci", "ci")).token;
const agentToken = (await tokenCreate(coordinator.db, "bench-agents", "agent")).token;

serve({
  query: async (message) => coordinator.db.query(String(message.sql), (message.params as unknown[]) ?? []),
  usage: () => ({ rss: process.memoryUsage().rss, cpu: cpuSeconds() }),
  stop: async () => {
    await coordinator.stop();
    process.exit(0);
  },
});
send({ type: "ready", url: coordinator.url, agentUrl: coordinator.agentUrl, ciToken, agentToken } satisfies CoordinatorReady);
