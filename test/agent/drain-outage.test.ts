// A drain (SIGTERM) lets running jobs finish for up to its timeout, and waits as long for the
// coordinator to acknowledge their reports: one away meanwhile (a Postgres restart: every hello
// closed with 1013) still hears how they ended. Found by a review: the wait was 5 s, and past it the
// agent exited with their `job.finished` unsent; the coordinator later found the job lost and ran it
// again, though it had succeeded well inside the drain's timeout.
import { pino } from "pino";
import { afterEach, expect, test } from "vitest";
import { type AddressInfo, type WebSocket, WebSocketServer } from "ws";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import type { AgentMessage } from "../../protocol/messages.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

test("a drain whose job ends while the coordinator is away reports its end once it is back, within the drain's timeout", { timeout: 40_000 }, async () => {
  let outageUntil = 0;
  const finished: AgentMessage[] = [];
  let first: WebSocket | undefined;
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => wss.once("listening", resolve));
  cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  let started!: () => void;
  const startedSeen = new Promise<void>((r) => (started = r));
  let assigned = false;
  wss.on("connection", (socket: WebSocket) => {
    first ??= socket;
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as AgentMessage;
      const send = (reply: unknown) => socket.send(JSON.stringify(reply));
      if (message.type === "hello") {
        // Its database is restarting: the hello is refused with 1013, as the coordinator does.
        if (Date.now() < outageUntil) return socket.close(1013, "database unavailable");
        return send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 30, jobs: assigned ? [{ jobId: "7", seq: 2 }] : [] });
      }
      if (message.type === "claim" && !assigned) {
        assigned = true;
        send({ type: "assign", job: { jobId: "7", workOrderId: "3", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds: null, adopt: null } });
      }
      if ("seq" in message) {
        if (message.type === "job.finished") finished.push(message);
        send({ type: "ack", jobId: message.jobId, seq: message.seq });
        if (message.type === "job.started") started();
      }
    });
  });
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  // A job that succeeds 0.2 s after it starts.
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({ result: new Promise((r) => setTimeout(() => r({ outcome: "succeeded", exitCode: 0 }), 200)), cancel: async () => {} }),
  };
  const agent = new Agent({
    urls: [url], token: "t", name: "drainer", labels: {}, capacity: 1, mode: "queue", version: "test",
    cancelGraceMs: 1000, logger: pino({ level: "silent" }), adapters: () => adapter,
  });
  agent.start();
  cleanups.push(() => agent.stop(0));
  await startedSeen;
  // Postgres restarts for 6 s: the coordinator closes the agent's socket with 1013 and refuses hellos.
  outageUntil = Date.now() + 6_000;
  first!.close(1013, "database unavailable");
  await agent.stop(30_000);
  expect(Date.now()).toBeGreaterThan(outageUntil);
  expect(finished.map((m) => m.type === "job.finished" && m.outcome)).toEqual(["succeeded"]);
});
