// How `run` stops. Interrupted (Ctrl-C, or CI's SIGTERM) it cancels its work order, trying the
// cancel again through an outage, also when the interrupt came while the work order was being
// enqueued; it then follows the work order to its end and exits as it ended (130, cancelled). A
// reader that goes away (`| head`) costs it its output, not its exit code. The coordinator here is
// a script over real HTTP: one that refuses a cancel once, answers an enqueue late, or streams a
// long log.
import { createServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, expect, test } from "vitest";
import { jobfleet } from "../support/processes.ts";
import { until } from "../support/until.ts";

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

/** `jobfleet run` against `url`, stopped after the test if it has not ended. */
function run(url: string) {
  const child = jobfleet(["run", "--url", url, "--token", "t", "--", "sleep", "60"]);
  closers.push(() => child.stop("SIGKILL"));
  return child;
}

type Follower = { event(name: string, data: unknown): void; end(): void };

/**
 * A coordinator for work order 5: its enqueue answered after `enqueueMs`; its first cancel refused
 * with 503, the second taken; `following` is what its log stream says once a follower is there.
 */
async function coordinator(enqueueMs: number, following: (follower: Follower) => void = () => {}) {
  const cancels: number[] = [];
  const posted: number[] = [];
  let follower: ServerResponse | undefined;
  const event = (name: string, data: unknown) => follower?.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  const server = createServer((request, response) => {
    request.resume();
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      response.writeHead(status, { "content-type": "application/json", ...headers });
      response.end(JSON.stringify(body));
    };
    if (request.method === "POST" && request.url === "/v1/work-orders") {
      posted.push(Date.now());
      return void setTimeout(() => json(201, { id: "5", selector: "os=linux" }), enqueueMs);
    }
    if (request.method === "POST" && request.url === "/v1/work-orders/5/cancel") {
      cancels.push(Date.now());
      if (cancels.length === 1) return json(503, { error: { code: "unavailable", message: "the database is unavailable" } }, { "retry-after": "1" });
      json(202, { id: "5", state: "running" });
      event("end", { type: "end", state: "cancelled", exitCode: null });
      return void follower?.end();
    }
    if (request.method === "GET" && request.url?.startsWith("/v1/work-orders/5/log")) {
      response.writeHead(200, { "content-type": "text/event-stream" });
      follower = response;
      event("job", { type: "job", jobId: "9", attempt: 1, offset: 0 });
      return following({ event, end: () => response.end() });
    }
    json(404, { error: { code: "not_found", message: request.url } });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(() => server.close(), () => server.closeAllConnections());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, cancels, posted };
}

test("a cancel the coordinator refuses (it is restarting) is sent again, and run exits 130 once the work order is cancelled", { timeout: 20_000 }, async () => {
  const { url, cancels } = await coordinator(0);
  const running = run(url);
  await running.waitFor(/job 9 \(attempt 1\)/);
  running.child.kill("SIGINT");
  const exit = await running.exited;
  expect(cancels).toHaveLength(2);
  expect(exit.stderr).toMatch(/cancelling again in/);
  expect(exit.code).toBe(130);
});

test("an interrupt while the work order is being enqueued cancels it once it is", { timeout: 20_000 }, async () => {
  const { url, cancels, posted } = await coordinator(1_500);
  const running = run(url);
  // Once the enqueue has reached the coordinator, whose answer is 1.5 s away.
  await until(() => posted.length === 1, "the enqueue to be sent");
  running.child.kill("SIGTERM");
  await until(() => cancels.length === 2, "the cancel to be sent again");
  const exit = await running.exited;
  expect(exit.stderr).toMatch(/interrupted; the work order is cancelled once enqueued/);
  expect(exit.code).toBe(130);
});

test("a reader that goes away (| head) takes the rest of the output with it; run still exits as its job did", { timeout: 20_000 }, async () => {
  const line = `${"x".repeat(99)}\n`;
  const { url } = await coordinator(0, (follower) => {
    for (let i = 0; i < 2_000; i++) follower.event("log", { type: "log", jobId: "9", offset: i * 100, data: line.repeat(10) });
    follower.event("end", { type: "end", state: "failed", exitCode: 3 });
    follower.end();
  });
  const running = run(url);
  running.child.stdout!.once("data", () => running.child.stdout!.destroy());
  const exit = await running.exited;
  expect(exit.stderr).not.toMatch(/EPIPE|Unhandled/);
  expect(exit.stderr).toMatch(/work order 5 failed \(exit 3\)/);
  expect(exit.code).toBe(3);
});

test("so does one reading both of its outputs (2>&1 | head)", { timeout: 20_000 }, async () => {
  const { url } = await coordinator(0, (follower) => {
    setTimeout(() => {
      follower.event("end", { type: "end", state: "failed", exitCode: 3 });
      follower.end();
    }, 500);
  });
  const running = run(url);
  // Gone once it has the enqueue's line: the job's line and the ending go to a closed pipe.
  await running.waitFor(/enqueued/);
  running.child.stdout!.destroy();
  running.child.stderr!.destroy();
  expect((await running.exited).code).toBe(3);
});
