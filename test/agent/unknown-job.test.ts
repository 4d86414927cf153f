// A coordinator that does not know a job at all (its database lost it: restored from a backup)
// answers each of its messages `unknown_job` and never acknowledges them. The agent stops such a
// job and drops what it would send of it, rather than sending it again after every reconnect.
// A job it no longer lists at a reconnect (it gave the job up) is stopped at once. The coordinator
// here is a script over a real WebSocket: a real one never forgets a job.
import { expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter } from "../../adapters/adapter.ts";
import type { AgentMessage } from "../../protocol/messages.ts";
import { JOB, useScriptedCoordinator } from "../support/scripted-coordinator.ts";

const scripted = useScriptedCoordinator();

const done: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async () => ({ result: Promise.resolve({ outcome: "succeeded", exitCode: 0 }), cancel: async () => {} }),
};

test("messages of a job the coordinator does not know are not sent again after a reconnect", async () => {
  /** What each connection received, in order. */
  const connections: AgentMessage[][] = [];
  const claimed: (() => void)[] = [];
  let assigned = false;
  const secondClaim = new Promise<void>((resolve) => (claimed[1] = resolve));
  const { url } = await scripted.coordinator((message, send, socket, n) => {
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
  scripted.agent(url, { name: "forgotten", adapter: done, cancelGraceMs: 100 });

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
  const { url } = await scripted.coordinator((message, send, socket, n) => {
    // The second welcome lists no job: while the agent was away, its lease ran out.
    if (message.type === "hello") send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 30, jobs: [] });
    if (message.type === "claim" && n === 0) send({ type: "assign", job: JOB });
    if (message.type === "job.started") socket.close(1013, "reconnect");
  });
  scripted.agent(url, { name: "given-up", adapter: running, cancelGraceMs: 60_000 });
  await vi.waitFor(() => expect(graces).toEqual([0]), { timeout: 10_000 });
});
