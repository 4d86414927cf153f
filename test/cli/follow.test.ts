// `jobfleet run` follows a work order's log through a proxy that breaks its connection: it takes the
// log up again where it broke off, across a retry, and gives up only after its reconnect window.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout } from "node:timers/promises";
import { afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { execAdapter } from "../../adapters/exec.ts";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Client, Interrupted, retryAfterMs } from "../../cli/client.ts";
import { follow } from "../../cli/commands/work.ts";
import { CliError } from "../../cli/errors.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";
import { jobfleet } from "../support/processes.ts";
import { Proxy } from "../support/proxy.ts";
import { until } from "../support/until.ts";

const fleet = useInProcessCoordinator();
let proxy: Proxy;
let dir: string;

beforeAll(() => {
  fleet().agent({ name: "follow-agent", labels: { pool: "follow" }, adapter: execAdapter });
});
beforeEach(async () => {
  proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(fleet().coordinator.url).port) });
  dir = mkdtempSync(join(tmpdir(), "jobfleet-follow-"));
});
afterEach(async () => {
  // A job still waiting for its file ends before the file goes with its directory.
  writeFileSync(join(dir, "go"), "");
  await until(async () => (await fleet().api<{ items: unknown[] }>("GET", "/v1/work-orders?state=running")).items.length === 0, "running jobs to end");
  await proxy.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Prints `a1`, waits for the file `go`, prints `a2` and fails; its retry prints `b1` and succeeds. */
const script = (at: string) =>
  `if [ -e ${at}/first ]; then echo b1; exit 0; fi; touch ${at}/first; echo a1; while [ ! -e ${at}/go ]; do sleep 0.02; done; echo a2; exit 1`;

it("run takes the log up again after its connection is cut, across the retry that ran meanwhile", { timeout: 60_000 }, async () => {
  const run = jobfleet(
    ["run", "--url", proxy.url, "--token", fleet().ciToken, "--selector", "pool=follow", "--max-attempts", "2", "--retry-on", "failed", "--retry-backoff", "0", "--", "sh", "-c", script(dir)],
  );
  const [, id] = await run.waitFor(/work order (\d+) enqueued/);
  await until(() => run.stdout === "a1\n", "a1");

  proxy.cut({ refuse: true });
  writeFileSync(join(dir, "go"), "");
  await until(async () => (await fleet().api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).state === "succeeded", "the retry to succeed");
  await run.waitFor(/following again/);
  proxy.allow();

  const exit = await run.exited;
  expect(exit, exit.stderr).toMatchObject({ code: 0, stdout: "a1\na2\nb1\n" });
  expect(exit.stderr).toMatch(/job \d+ \(attempt 1\)[\s\S]*following again[\s\S]*job \d+ \(attempt 2\)[\s\S]*succeeded/);
});

it("a stream that goes silent is given up after the idle time, as a connection that may be tried again", async () => {
  const order = await fleet().api<WorkOrderView>("POST", "/v1/work-orders", { selector: "pool=follow", spec: { command: ["sh", "-c", script(dir)] } });
  // Longer than the job takes to start and print on a busy machine, where 0.3 s was not.
  const events = new Client(proxy.url, fleet().ciToken).events(`/v1/work-orders/${order.id}/log?follow=true`, { idleMs: 2_000 });
  expect((await events.next()).value).toMatchObject({ event: "job" });
  expect((await events.next()).value).toMatchObject({ event: "log", data: expect.stringContaining("a1") });
  proxy.silence();
  const lost = await events.next().catch((error: unknown) => error);
  expect(lost).toBeInstanceOf(Interrupted);
  expect((lost as Error).message).toMatch(/no word from the coordinator at .* for 2 s/);
});

it("follow gives up once the coordinator has been out of reach for its reconnect window; a refusal at once", async () => {
  const client = new Client(proxy.url, fleet().ciToken);
  const order = await fleet().api<WorkOrderView>("POST", "/v1/work-orders", { selector: "pool=nobody", spec: { command: ["true"] } });
  proxy.cut({ refuse: true });
  const started = Date.now();
  const outOfReach = await follow(client, `/v1/work-orders/${order.id}/log?follow=true`, "it", { idleMs: 1000, reconnectForMs: 600 }).catch((error: unknown) => error);
  expect(outOfReach).toBeInstanceOf(CliError);
  expect((outOfReach as Error).message).toMatch(/cannot reach the coordinator .*; gave up after 0.6 s/);
  expect(Date.now() - started).toBeGreaterThanOrEqual(600);

  proxy.allow();
  const missing = await follow(client, "/v1/work-orders/999999/log?follow=true", "it", { idleMs: 1000, reconnectForMs: 60_000 }).catch((error: unknown) => error);
  expect(missing).not.toBeInstanceOf(Interrupted);
  expect((missing as Error).message).toMatch(/^404: work order 999999 not found/);
  await fleet().api("POST", `/v1/work-orders/${order.id}/cancel`, {});
});

it("follow gives each outage its own reconnect window, however long ago the last event came", { timeout: 30_000 }, async () => {
  const order = await fleet().api<WorkOrderView>("POST", "/v1/work-orders", { selector: "pool=follow", spec: { command: ["sh", "-c", script(dir)] } });
  const client = new Client(proxy.url, fleet().ciToken);
  const done = follow(client, `/v1/work-orders/${order.id}/log?follow=true`, "it", { idleMs: 10_000, reconnectForMs: 600 });
  await until(() => proxy.open > 0, "the stream");
  await setTimeout(300); // a1 is printed; from here the job is quiet

  const outage = async () => {
    proxy.cut({ refuse: true });
    await setTimeout(100);
    proxy.allow();
    await until(() => proxy.open > 0, "the stream again");
  };
  await outage();
  await setTimeout(800); // longer than the window, and no event meanwhile
  await outage();
  writeFileSync(join(dir, "go"), "");
  expect(await done).toBe(1);
});

it("follow waits as long as a 503's Retry-After asks before it tries again", async () => {
  const asked: number[] = [];
  const server = createServer((_request, response) => {
    asked.push(Date.now());
    if (asked.length === 1) {
      response.writeHead(503, { "content-type": "application/json", "retry-after": "1" });
      return response.end(JSON.stringify({ error: { code: "too_many_followers", message: "too many followers" } }));
    }
    response.writeHead(200, { "content-type": "text/event-stream" });
    response.end(`event: end\ndata: ${JSON.stringify({ type: "end", state: "succeeded", exitCode: 0 })}\n\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const client = new Client(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, "token");
    expect(await follow(client, "/v1/work-orders/1/log?follow=true", "it", { idleMs: 5_000, reconnectForMs: 10_000 })).toBe(0);
    // Without it, the first retry comes within 0.5 s.
    expect(asked[1]! - asked[0]!).toBeGreaterThanOrEqual(990);
  } finally {
    server.close();
  }
});

it("Retry-After is read as seconds or an HTTP date, and kept within a minute", () => {
  const now = Date.parse("2026-11-30T10:00:00Z");
  expect(retryAfterMs("5", now)).toBe(5_000);
  expect(retryAfterMs("Mon, 30 Nov 2026 10:00:30 GMT", now)).toBe(30_000);
  expect(retryAfterMs("Mon, 30 Nov 2026 09:00:00 GMT", now)).toBe(0);
  expect(retryAfterMs("86400", now)).toBe(60_000);
  expect(retryAfterMs("soon", now)).toBeUndefined();
  expect(retryAfterMs(null, now)).toBeUndefined();
});
