// A job printing at full speed to a coordinator that reads slowly (its database writing logs slower
// than the job prints, a slow link): the agent's ping waits behind all it already handed to its
// socket, and the pong comes back after the next beat. The agent once cut the connection as if the
// coordinator had vanished, though the coordinator acknowledged its messages all along, and sent
// again what was in flight: the slower the coordinator, the more the agent sent it.
import { connect, createServer, type Socket } from "node:net";
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

/** A TCP proxy that passes the agent's bytes on at `bytesPerSecond` (a slow link or a slow reader). */
async function throttle(targetPort: number, bytesPerSecond: number): Promise<number> {
  const server = createServer((client: Socket) => {
    const upstream = connect(targetPort, "127.0.0.1");
    upstream.pipe(client);
    client.on("data", (chunk: Buffer) => {
      upstream.write(chunk);
      client.pause();
      setTimeout(() => client.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    const close = () => (client.destroy(), upstream.destroy());
    client.on("close", close).on("error", close);
    upstream.on("close", close).on("error", close);
  });
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

test("a coordinator that reads slowly but acknowledges all along is not left for dead", { timeout: 60_000 }, async () => {
  let connections = 0;
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => wss.once("listening", resolve));
  cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  let assigned = false;
  wss.on("connection", (socket: WebSocket) => {
    connections++;
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as AgentMessage;
      const send = (reply: unknown) => socket.send(JSON.stringify(reply));
      if (message.type === "hello") {
        return send({ type: "welcome", agentId: "1", heartbeatSeconds: 1, leaseSeconds: 60, jobs: assigned ? [{ jobId: "7", seq: 0 }] : [] });
      }
      if (message.type === "claim" && !assigned) {
        assigned = true;
        send({ type: "assign", job: { jobId: "7", workOrderId: "3", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds: null, adopt: null } });
      }
      // Every job message is acknowledged as it is read: the coordinator is alive and talking.
      if ("seq" in message) send({ type: "ack", jobId: message.jobId, seq: message.seq });
    });
  });
  const port = await throttle((wss.address() as AddressInfo).port, 512 * 1024);
  // A job that prints 64 KiB every 10 ms (6.4 MB/s) for 8 s.
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async (ctx) => {
      const line = `${"x".repeat(64 * 1024 - 1)}\n`;
      const timer = setInterval(() => ctx.log(line), 10);
      return {
        result: new Promise<RunResult>((r) => setTimeout(() => (clearInterval(timer), r({ outcome: "succeeded", exitCode: 0 })), 8_000)),
        cancel: async () => {},
      };
    },
  };
  const agent = new Agent({
    urls: [`ws://127.0.0.1:${port}`], token: "t", name: "noisy", labels: {}, capacity: 1, mode: "queue", version: "test",
    cancelGraceMs: 1000, logger: pino({ level: "silent" }), adapters: () => adapter,
  });
  agent.start();
  cleanups.push(() => agent.stop(0));
  await new Promise((r) => setTimeout(r, 9_000));
  expect(connections).toBe(1);
});
