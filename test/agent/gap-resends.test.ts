// A coordinator that answers every message of a job with `sequence_gap`, whatever it is told: each
// gap sent the job's unacknowledged messages again at once, every one of which came back as a gap,
// so the resends grew without bound. A gap with nothing refused has the agent dial again (its
// welcome says where the job stands), once in a while; gaps between go through the job's resend
// backoff, as a refusal does. (A real coordinator that lost commits is in lost-commits.test.ts.)
import { expect, test } from "vitest";
import type { WebSocket } from "ws";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { JOB, useScriptedCoordinator } from "../support/scripted-coordinator.ts";

const scripted = useScriptedCoordinator();

test("a coordinator answering every message of a job with a gap gets one redial and then a resend a backoff step, not a storm", { timeout: 30_000 }, async () => {
  let gapped = 0;
  let first: WebSocket | undefined;
  const { url, connections } = await scripted.coordinator((message, send, socket, n) => {
    first ??= socket;
    const lost = n > 0;
    if (message.type === "hello") {
      return send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 60, jobs: lost ? [{ jobId: "7", seq: 1 }] : [] });
    }
    if (message.type === "claim" && !lost) send({ type: "assign", job: JOB });
    if (!("seq" in message)) return;
    if (!lost) return send({ type: "ack", jobId: message.jobId, seq: message.seq });
    gapped++;
    send({ type: "error", code: "sequence_gap", message: `job 7: expected seq 2, got ${message.seq}`, jobId: "7", fatal: false });
  });
  // A job that says a line every 100 ms, for ever.
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async (ctx) => {
      const timer = setInterval(() => ctx.log("tick\n"), 100);
      scripted.cleanup(() => clearInterval(timer));
      return { result: new Promise<RunResult>(() => {}), cancel: async () => {} };
    },
  };
  scripted.agent(url, { name: "gapped", adapter, cancelGraceMs: 100, stopMs: 0 });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  first!.terminate();
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  // The cut, then one redial for the gaps.
  expect(connections()).toBe(3);
  // About 50 lines in 5 s, a message each or fewer; resent a backoff step at a time, a few times over.
  expect(gapped).toBeLessThan(500);
});
