// A drain waits until its deadline for the coordinator to acknowledge how its jobs ended, so that a
// coordinator away meanwhile still hears (README). Its redials and its resends of refused reports
// then come within a second: on the ordinary backoff, 15-30 s once an outage has lasted ~16 s, a
// coordinator back as a 10 s drain began was never dialled again before the agent exited, and a job
// that succeeded was never reported (the coordinator would find it lost and run it again).
import { pino } from "pino";
import { afterEach, expect, test } from "vitest";
import { type AddressInfo, type WebSocket, WebSocketServer } from "ws";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import type { AgentMessage } from "../../protocol/messages.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

test("a drain that starts as the coordinator comes back reports its job's end within the drain's timeout", { timeout: 90_000 }, async () => {
  let refuse = 0;
  let refused = 0;
  let cameBack!: () => void;
  const back = new Promise<void>((r) => (cameBack = r));
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
        // Its database is restarting: hellos are refused with 1013, as the coordinator does.
        if (refused < refuse) {
          if (++refused === refuse) cameBack();
          return socket.close(1013, "database unavailable");
        }
        return send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 300, jobs: assigned ? [{ jobId: "7", seq: 2 }] : [] });
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
  // A job that succeeds once told to.
  let end!: (result: RunResult) => void;
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({ result: new Promise<RunResult>((r) => (end = r)), cancel: async () => {} }),
  };
  const agent = new Agent({
    urls: [url], token: "t", name: "drainer", labels: {}, capacity: 1, mode: "queue", version: "test",
    cancelGraceMs: 1000, logger: pino({ level: "silent" }), adapters: () => adapter,
  });
  agent.start();
  cleanups.push(() => agent.stop(0));
  await startedSeen;
  // The database restarts: the socket is closed with 1013 and six hellos are refused (~16-31 s).
  refuse = 6;
  first!.close(1013, "database unavailable");
  await back;
  // The coordinator is back. Now the agent is told to drain (10 s), and its job ends at once.
  const draining = agent.stop(10_000);
  end({ outcome: "succeeded", exitCode: 0 });
  await draining;
  expect(finished.map((m) => m.type === "job.finished" && m.outcome)).toEqual(["succeeded"]);
});
