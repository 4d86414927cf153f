// A token is checked at an agent's hello, and an agent may stay connected for weeks: once its token
// is revoked, its connection is closed for good (4001) within the verifier's cache age and half a
// heartbeat, and it cannot come back with it. An agent let in with another token stays. An agent
// that reads its token at each dial (a token file) dials again with a new one put in place first.
// A name another good token holds is waited for, not taken; an agent refused its new token for
// that goes back to its old one at once. The lease is long enough that the
// redials these take (a backoff step each) never let an agent's fence fall on its running job.
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterAll, beforeAll, expect, test } from "vitest";
import { Agent, AgentFailed } from "../../agent/agent.ts";
import { tokenCreate, tokenRevoke } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { execAdapter } from "../../adapters/exec.ts";
import { Proxy } from "../support/proxy.ts";

const logger = pino({ level: "silent" });
let coordinator: Coordinator;

beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, heartbeatSeconds: 1, leaseSeconds: 10, logger });
});
afterAll(() => coordinator.stop());

const agent = (name: string, token: string | (() => string), url = coordinator.agentUrl, log = logger) => {
  const started = new Agent({ urls: [url], token, name, labels: {}, capacity: 1, mode: "queue", version: "test", cancelGraceMs: 100, logger: log, adapters: () => execAdapter });
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

test("an agent whose token source holds a new token when the old is revoked dials again with it; its job runs on", { timeout: 30_000 }, async () => {
  const old = await tokenCreate(coordinator.db, "rotated-old", "agent");
  let current = old.token;
  const a = agent("rotated-agent", () => current);
  const session = async () => (await coordinator.db.query<{ s: string | null }>(`SELECT session_id::text AS s FROM agents WHERE name = 'rotated-agent'`))[0]?.s ?? null;
  await expect.poll(session, { timeout: 10_000 }).not.toBeNull();
  const before = await session();
  const ci = await tokenCreate(coordinator.db, "rotated-ci", "ci");
  const posted = await fetch(`${coordinator.url}/v1/work-orders`, {
    method: "POST",
    headers: { authorization: `Bearer ${ci.token}`, "content-type": "application/json" },
    body: JSON.stringify({ spec: { command: ["sleep", "4"] }, agent: "rotated-agent" }),
  });
  const row = (await posted.json()) as { id: string };
  const state = async () => (await coordinator.db.query<{ state: string }>(`SELECT state FROM work_orders WHERE id = $1`, [row.id]))[0]!.state;
  await expect.poll(state, { timeout: 10_000 }).toBe("running");

  current = (await tokenCreate(coordinator.db, "rotated-new", "agent")).token;
  expect(await tokenRevoke(coordinator.db, old.view.id)).toBe(true);
  let failed: unknown;
  void a.stopped.catch((error: unknown) => (failed = error));
  await expect.poll(async () => { const now = await session(); return now !== null && now !== before; }, { timeout: 15_000 }).toBe(true);
  await expect.poll(state, { timeout: 15_000 }).toBe("succeeded");
  expect(failed).toBeUndefined();
  await a.stop(1000);
});

test("an agent whose name another good token holds redials until that token is revoked, then gets in", { timeout: 30_000 }, async () => {
  const held = await tokenCreate(coordinator.db, "holder", "agent");
  const first = agent("contested", held.token);
  await expect.poll(connected, { timeout: 10_000 }).toContain("contested");
  await first.stop(1000);
  await expect.poll(connected, { timeout: 10_000 }).not.toContain("contested");

  const second = agent("contested", (await tokenCreate(coordinator.db, "newcomer", "agent")).token);
  let failed: unknown;
  void second.stopped.catch((error: unknown) => (failed = error));
  // Refused (4005) and redialling: not connected, and not given up.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  expect(await connected()).not.toContain("contested");
  expect(failed).toBeUndefined();
  expect(await tokenRevoke(coordinator.db, held.view.id)).toBe(true);
  await expect.poll(connected, { timeout: 15_000 }).toContain("contested");
  expect(failed).toBeUndefined();
  await second.stop(1000);
});

test("an agent cut off after its new token was written, before the old was revoked, dials back with the old one; its job runs on, and it moves to the new one at the revocation", { timeout: 40_000 }, async () => {
  const proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(coordinator.url).port) });
  try {
    const old = await tokenCreate(coordinator.db, "midway-old", "agent");
    let current = old.token;
    const lines: { msg: string; code?: number; delayMs?: number }[] = [];
    const log = pino({ level: "warn" }, new Writable({ write: (chunk, _encoding, done) => done(void lines.push(JSON.parse(String(chunk)))) }));
    const a = agent("midway", () => current, `ws://127.0.0.1:${proxy.port}/v1/agent`, log);
    let failed: unknown;
    void a.stopped.catch((error: unknown) => (failed = error));
    const session = async () => (await coordinator.db.query<{ s: string | null }>(`SELECT session_id::text AS s FROM agents WHERE name = 'midway'`))[0]?.s ?? null;
    await expect.poll(session, { timeout: 10_000 }).not.toBeNull();
    const ci = await tokenCreate(coordinator.db, "midway-ci", "ci");
    const posted = await fetch(`${coordinator.url}/v1/work-orders`, {
      method: "POST",
      headers: { authorization: `Bearer ${ci.token}`, "content-type": "application/json" },
      body: JSON.stringify({ spec: { command: ["sleep", "6"] }, agent: "midway" }),
    });
    const { id } = (await posted.json()) as { id: string };
    const state = async () => (await coordinator.db.query<{ state: string }>(`SELECT state FROM work_orders WHERE id = $1`, [id]))[0]!.state;
    await expect.poll(state, { timeout: 10_000 }).toBe("running");

    current = (await tokenCreate(coordinator.db, "midway-new", "agent")).token;
    const before = await session();
    proxy.cut();
    // Refused with the new token (the old one still holds the name), back in with the old.
    await expect.poll(async () => { const now = await session(); return now !== null && now !== before; }, { timeout: 15_000 }).toBe(true);
    // Back to the old token at once: the time away counts against the running job's lease.
    expect(lines.filter((l) => l.msg === "disconnected; redialling" && l.code === 4005).map((l) => l.delayMs)).toEqual([0]);
    expect(await tokenRevoke(coordinator.db, old.view.id)).toBe(true);
    await expect.poll(state, { timeout: 20_000 }).toBe("succeeded");
    await expect.poll(session, { timeout: 10_000 }).not.toBeNull();
    expect(failed).toBeUndefined();
    await a.stop(1000);
  } finally {
    await proxy.close();
  }
});
