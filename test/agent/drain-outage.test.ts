// A drain (SIGTERM) lets running jobs finish for up to its timeout, and waits as long for the
// coordinator to acknowledge their reports: one away meanwhile (a Postgres restart: every hello
// closed with 1013) still hears how they ended. Found by a review: the wait was 5 s, and past it the
// agent exited with their `job.finished` unsent; the coordinator later found the job lost and ran it
// again, though it had succeeded well inside the drain's timeout.
// From the drain on, its redials and its resends of refused reports come within a second: on the
// ordinary backoff, 15-30 s once an outage has lasted ~16 s, a coordinator back as a 10 s drain
// began was never dialled again before the agent exited, and a job that succeeded went unreported.
import { expect, test } from "vitest";
import type { WebSocket } from "ws";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import type { AgentMessage } from "../../protocol/messages.ts";
import { JOB, useScriptedCoordinator } from "../support/scripted-coordinator.ts";

const scripted = useScriptedCoordinator();

/**
 * A coordinator that assigns job 7 and acknowledges what it hears, refusing hellos (1013, its
 * database restarting) while `refused()` says so; `cut` closes the first connection as it does.
 */
async function restarting(refused: () => boolean, leaseSeconds: number) {
  const finished: AgentMessage[] = [];
  let first: WebSocket | undefined;
  let started!: () => void;
  const startedSeen = new Promise<void>((resolve) => (started = resolve));
  let assigned = false;
  const { url } = await scripted.coordinator((message, send, socket) => {
    first ??= socket;
    if (message.type === "hello") {
      if (refused()) return socket.close(1013, "database unavailable");
      return send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds, jobs: assigned ? [{ jobId: "7", seq: 2 }] : [] });
    }
    if (message.type === "claim" && !assigned) {
      assigned = true;
      send({ type: "assign", job: JOB });
    }
    if ("seq" in message) {
      if (message.type === "job.finished") finished.push(message);
      send({ type: "ack", jobId: message.jobId, seq: message.seq });
      if (message.type === "job.started") started();
    }
  });
  return { url, finished, startedSeen, cut: () => first!.close(1013, "database unavailable") };
}

test("a drain whose job ends while the coordinator is away reports its end once it is back, within the drain's timeout", { timeout: 40_000 }, async () => {
  let outageUntil = 0;
  const coordinator = await restarting(() => Date.now() < outageUntil, 30);
  // A job that succeeds 0.2 s after it starts.
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({ result: new Promise((r) => setTimeout(() => r({ outcome: "succeeded", exitCode: 0 }), 200)), cancel: async () => {} }),
  };
  const agent = scripted.agent(coordinator.url, { name: "drainer", adapter, cancelGraceMs: 1000, stopMs: 0 });
  await coordinator.startedSeen;
  // Postgres restarts for 6 s: the coordinator closes the agent's socket with 1013 and refuses hellos.
  outageUntil = Date.now() + 6_000;
  coordinator.cut();
  await agent.stop(30_000);
  expect(Date.now()).toBeGreaterThan(outageUntil);
  expect(coordinator.finished.map((m) => m.type === "job.finished" && m.outcome)).toEqual(["succeeded"]);
});

test("a drain that starts as the coordinator comes back reports its job's end within the drain's timeout", { timeout: 90_000 }, async () => {
  let refuse = 0;
  let cameBack!: () => void;
  const back = new Promise<void>((resolve) => (cameBack = resolve));
  const coordinator = await restarting(() => {
    if (refuse === 0) return false;
    if (--refuse === 0) cameBack();
    return true;
  }, 300);
  // A job that succeeds once told to.
  let end!: (result: RunResult) => void;
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async () => ({ result: new Promise<RunResult>((r) => (end = r)), cancel: async () => {} }),
  };
  const agent = scripted.agent(coordinator.url, { name: "drainer", adapter, cancelGraceMs: 1000, stopMs: 0 });
  await coordinator.startedSeen;
  // The database restarts: the socket is closed with 1013 and six hellos are refused (~16-31 s).
  refuse = 6;
  coordinator.cut();
  await back;
  // The coordinator is back. Now the agent is told to drain (10 s), and its job ends at once.
  const draining = agent.stop(10_000);
  end({ outcome: "succeeded", exitCode: 0 });
  await draining;
  expect(coordinator.finished.map((m) => m.type === "job.finished" && m.outcome)).toEqual(["succeeded"]);
});
