// A token is checked at an agent's hello, and an agent may stay connected for weeks: once its token
// is revoked, its connection is closed for good (4001) within the verifier's cache age and half a
// heartbeat, and it cannot come back with it. An agent let in with another token stays.
import { pino } from "pino";
import { afterAll, beforeAll, expect, test } from "vitest";
import { Agent, AgentFailed } from "../../agent/agent.ts";
import { tokenCreate, tokenRevoke } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { execAdapter } from "../../adapters/exec.ts";

const logger = pino({ level: "silent" });
let coordinator: Coordinator;

beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, heartbeatSeconds: 1, leaseSeconds: 3, logger });
});
afterAll(() => coordinator.stop());

const agent = (name: string, token: string) => {
  const started = new Agent({ urls: [coordinator.agentUrl], token, name, labels: {}, capacity: 1, mode: "queue", version: "test", cancelGraceMs: 100, logger, adapters: () => execAdapter });
  started.start();
  return started;
};

const connected = async () =>
  (await coordinator.db.query<{ name: string }>(`SELECT name FROM agents WHERE session_id IS NOT NULL ORDER BY name`)).map((r) => r.name);

test("an agent whose token is revoked is closed for good; one with another token stays", { timeout: 30_000 }, async () => {
  const [doomed, kept] = [await tokenCreate(coordinator.db, "doomed", "agent"), await tokenCreate(coordinator.db, "kept", "agent")];
  const [a, b] = [agent("doomed-agent", doomed.token), agent("kept-agent", kept.token)];
  await expect.poll(connected, { timeout: 10_000 }).toEqual(["doomed-agent", "kept-agent"]);
  expect(await tokenRevoke(coordinator.db, doomed.view.id)).toBe(true);
  const error = await a.stopped.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(AgentFailed);
  expect(String(error)).toContain("the coordinator refused the token");
  await expect.poll(connected, { timeout: 5_000 }).toEqual(["kept-agent"]);
  await b.stop(1000);
});
