// A coordinator that does not know a job at all (its database lost it: restored from a backup)
// answers each of its messages `unknown_job` and never acknowledges them. The agent stops such a
// job and drops what it would send of it, rather than sending it again after every reconnect.
// A job it no longer lists at a reconnect (it gave the job up) is stopped at once. The coordinator
// here is a script over a real WebSocket: a real one never forgets a job.
import { pino } from "pino";
import { afterEach, expect, test, vi } from "vitest";
import { type AddressInfo, type WebSocket, WebSocketServer } from "ws";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import type { AgentMessage, Assignment, CoordinatorMessage } from "../../protocol/messages.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const done: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async () => ({ result: Promise.resolve({ outcome: "succeeded", exitCode: 0 }), cancel: async () => {} }),
};

const JOB: Assignment = { jobId: "7", workOrderId: "3", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds: null, adopt: null };

/**
 * A scripted coordinator: `answer` hears each message of the `n`th connection (from 0) and answers
 * through `send`; stopped after the test.
 */
async function coordinator(answer: (message: AgentMessage, send: (reply: CoordinatorMessage) => void, socket: WebSocket, n: number) => void): Promise<string> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => wss.once("listening", resolve));
  cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  let connections = 0;
  wss.on("connection", (socket: WebSocket) => {
    const n = connections++;
    const send = (reply: CoordinatorMessage) => socket.send(JSON.stringify(reply));
    socket.on("message", (data) => answer(JSON.parse(data.toString()) as AgentMessage, send, socket, n));
  });
  return `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
}

/** A started agent of capacity 1 dialling `url`, whose jobs run through `adapter`; stopped after the test. */
function agentOf(url: string, name: string, adapter: Adapter<unknown>, cancelGraceMs: number): Agent {
  const agent = new Agent({
    urls: [url],
    token: "t",
    name,
    labels: {},
    capacity: 1,
    mode: "queue",
    version: "test",
    cancelGraceMs,
    logger: pino({ level: "silent" }),
    adapters: () => adapter,
  });
  agent.start();
  cleanups.push(() => agent.stop(1000));
  return agent;
}

test("messages of a job the coordinator does not know are not sent again after a reconnect", async () => {
  /** What each connection received, in order. */
  const connections: AgentMessage[][] = [];
  const claimed: (() => void)[] = [];
  let assigned = false;
  const secondClaim = new Promise<void>((resolve) => (claimed[1] = resolve));
  const url = await coordinator((message, send, socket, n) => {
    (connections[n] ??= []).push(message);
    if (message.type === "hello") send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 30, jobs: [] });
    if (message.type === "claim") {
      if (!assigned) send({ type: "assign", job: JOB });
      assigned = true;
      claimed[n]?.();
    }
    if (message.type.startsWith("job.")) {
      send({ type: "error", code: "unknown_job", message: "job 7 is not assigned to this agent", jobId: "7", fatal: false });
      // Its last word: the agent redials, and says again whatever it still holds.
      if (message.type === "job.finished") setTimeout(() => socket.close(1013, "reconnect"), 50);
    }
  });
  agentOf(url, "forgotten", done, 100);

  await secondClaim;
  expect(connections[0]!.map((m) => m.type)).toEqual(["hello", "claim", "job.starting", "job.started", "job.finished", "claim"]);
  // The claim follows the resend of everything unacknowledged: nothing of job 7 came before it.
  expect(connections[1]!.map((m) => m.type)).toEqual(["hello", "claim"]);
});

test("a running job the coordinator no longer lists at a reconnect (it gave the job up) is stopped at once, not after the cancel grace", async () => {
  const graces: number[] = [];
  let end!: () => void;
  const running: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({
      result: new Promise((resolve) => (end = () => resolve({ outcome: "cancelled", exitCode: null }))),
      cancel: async (graceMs) => {
        graces.push(graceMs);
        end();
      },
    }),
  };
  const url = await coordinator((message, send, socket, n) => {
    // The second welcome lists no job: while the agent was away, its lease ran out.
    if (message.type === "hello") send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 30, jobs: [] });
    if (message.type === "claim" && n === 0) send({ type: "assign", job: JOB });
    if (message.type === "job.started") socket.close(1013, "reconnect");
  });
  agentOf(url, "given-up", running, 60_000);
  await vi.waitFor(() => expect(graces).toEqual([0]), { timeout: 10_000 });
});
