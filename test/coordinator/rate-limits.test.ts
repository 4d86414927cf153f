// Request rates: each token gets its own allowance of requests, and a client address that fails to
// authenticate too often is turned away, valid token or not, over HTTP and WebSocket alike, until
// its allowance has grown back. Against a real coordinator on loopback.
import { setTimeout } from "node:timers/promises";
import { pino } from "pino";
import { afterEach, beforeEach, expect, test } from "vitest";
import WebSocket from "ws";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { PROTOCOL_VERSION } from "../../protocol/limits.ts";
import type { CoordinatorMessage } from "../../protocol/messages.ts";

let coordinator: Coordinator;
let tokens: { ci: string; other: string; agent: string };

beforeEach(async () => {
  coordinator = await startCoordinator({
    database: { kind: "pglite", dataDir: ":memory:" },
    port: 0,
    requestsPerSecond: 1,
    // Slow to grow back, so that a loaded machine's slow requests do not earn one between two steps.
    authFailures: { perSecond: 0.5, burst: 3 },
    logger: pino({ level: "silent" }),
  });
  tokens = {
    ci: (await tokenCreate(coordinator.db, "ci", "ci")).token,
    other: (await tokenCreate(coordinator.db, "other", "ci")).token,
    agent: (await tokenCreate(coordinator.db, "agents", "agent")).token,
  };
});
afterEach(async () => coordinator?.stop());

async function get(token: string) {
  const response = await fetch(`${coordinator.url}/v1/agents`, { headers: { authorization: `Bearer ${token}` } });
  return { status: response.status, retryAfter: response.headers.get("retry-after"), body: (await response.json()) as { error?: { code: string; message: string } } };
}

/** A hello on a fresh socket: the first message back and how the socket closed. */
async function hello(token: string): Promise<{ first: CoordinatorMessage; code: number }> {
  const socket = new WebSocket(coordinator.agentUrl);
  const first = new Promise<CoordinatorMessage>((resolve) => socket.once("message", (data) => resolve(JSON.parse(data.toString()))));
  const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
  await new Promise((resolve) => socket.once("open", resolve));
  socket.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, token, name: "rated", labels: {}, capacity: 1, version: "test" }));
  const message = await first;
  if (message.type === "welcome") socket.close();
  return { first: message, code: await closed };
}

/** Requests until one is refused: how many passed, in how long, and the refusal. */
async function untilRefused(token: string) {
  const started = performance.now();
  for (let passed = 0; ; passed++) {
    const answer = await get(token);
    if (answer.status !== 200) return { passed, seconds: (performance.now() - started) / 1000, answer };
  }
}

test("a token gets bursts of ten seconds' worth, then 429 with Retry-After; another token is unaffected", async () => {
  const { passed, seconds, answer } = await untilRefused(tokens.ci);
  // The burst, and what the time it took earned at one a second.
  expect(passed).toBeGreaterThanOrEqual(10);
  expect(passed).toBeLessThanOrEqual(10 + Math.ceil(seconds));
  expect(answer.status).toBe(429);
  expect(answer.body.error).toEqual({ code: "rate_limited", message: "token ci may make 1 request a second (bursts of 10); try again in 1 s" });
  expect(answer.retryAfter).toBe("1");
  expect((await get(tokens.other)).status).toBe(200);
  // A refused request costs nothing more: the second after it earns the next one.
  await setTimeout(1050);
  const again = await untilRefused(tokens.ci);
  expect(again.passed).toBeGreaterThanOrEqual(1);
  expect(again.passed).toBeLessThanOrEqual(1 + Math.ceil(again.seconds));
});

test("an address that fails to authenticate too often is refused, even with a good token, until it has waited", async () => {
  const bad = `jft_999_${"x".repeat(43)}`;
  for (let i = 0; i < 3; i++) expect((await get(bad)).status).toBe(401);
  const barred = await get(tokens.ci);
  expect(barred.status).toBe(429);
  expect(barred.body.error?.message).toMatch(/^too many failed authentications from 127\.0\.0\.1; try again in [12] s$/);
  expect(barred.retryAfter).toMatch(/^[12]$/);
  // The WebSocket shares the count: a hello is told to come back later, not that its token is bad.
  const refused = await hello(tokens.agent);
  expect(refused.first).toMatchObject({ type: "error", code: "rate_limited", fatal: false });
  expect(refused.code).toBe(1013);
  // One failure's worth grows back in 2 s.
  await setTimeout(2100);
  expect((await get(tokens.ci)).status).toBe(200);
});

test("failed hellos count against the address too; a good token of the wrong role does not", async () => {
  expect(await hello(tokens.ci)).toMatchObject({ first: { type: "error", code: "unauthenticated" }, code: 4001 });
  for (let i = 0; i < 3; i++) {
    const { first, code } = await hello(`jft_999_${"y".repeat(43)}`);
    expect(first).toMatchObject({ type: "error", code: "unauthenticated", fatal: true });
    expect(code).toBe(4001);
  }
  expect((await hello(tokens.agent)).first).toMatchObject({ type: "error", code: "rate_limited" });
  expect((await get(tokens.ci)).status).toBe(429);
  await setTimeout(2100);
  expect((await hello(tokens.agent)).first).toMatchObject({ type: "welcome" });
});
