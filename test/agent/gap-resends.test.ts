// A coordinator that answers every message of a job with `sequence_gap` (its database lost commits
// it had acknowledged, so it expects a message the agent no longer holds): each gap sent the job's
// unacknowledged messages again at once, every one of which came back as a gap, so the resends
// grew without bound. A gap now goes through the job's resend backoff, as a refusal does.
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

test("a coordinator answering every message of a job with a gap gets a resend a backoff step, not a storm", { timeout: 30_000 }, async () => {
  let connections = 0;
  let gapped = 0;
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => wss.once("listening", resolve));
  cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  let first: WebSocket | undefined;
  wss.on("connection", (socket: WebSocket) => {
    const lost = ++connections > 1;
    first ??= socket;
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as AgentMessage;
      const send = (reply: unknown) => socket.send(JSON.stringify(reply));
      if (message.type === "hello") {
        return send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 60, jobs: lost ? [{ jobId: "7", seq: 1 }] : [] });
      }
      if (message.type === "claim" && !lost) {
        send({ type: "assign", job: { jobId: "7", workOrderId: "3", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds: null, adopt: null } });
      }
      if (!("seq" in message)) return;
      if (!lost) return send({ type: "ack", jobId: message.jobId, seq: message.seq });
      gapped++;
      send({ type: "error", code: "sequence_gap", message: `job 7: expected seq 2, got ${message.seq}`, jobId: "7" });
    });
  });
  // A job that says a line every 100 ms, for ever.
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async (ctx) => {
      const timer = setInterval(() => ctx.log("tick\n"), 100);
      cleanups.push(() => clearInterval(timer));
      return { result: new Promise<RunResult>(() => {}), cancel: async () => {} };
    },
  };
  const agent = new Agent({
    urls: [`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`], token: "t", name: "gapped", labels: {}, capacity: 1, mode: "queue", version: "test",
    cancelGraceMs: 100, logger: pino({ level: "silent" }), adapters: () => adapter,
  });
  agent.start();
  cleanups.push(() => agent.stop(0));
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  first!.terminate();
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  expect(connections).toBe(2);
  // About 50 lines in 5 s, a message each or fewer; resent a backoff step at a time, a few times over.
  expect(gapped).toBeLessThan(500);
});
