// A coordinator that answers every message of a job with `sequence_gap`, whatever it is told: each
// gap sent the job's unacknowledged messages again at once, every one of which came back as a gap,
// so the resends grew without bound. A gap with nothing refused has the agent dial again (its
// welcome says where the job stands), at most once every 30 s: one within 30 s of the last redial
// waits for the 30 s to pass, then redials. (A real coordinator that lost commits is in lost-commits.test.ts.)
import { expect, test } from "vitest";
import type { WebSocket } from "ws";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { JOB, useScriptedCoordinator } from "../support/scripted-coordinator.ts";

const scripted = useScriptedCoordinator();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A job that says a line every 100 ms, for ever. */
const ticking: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async (ctx) => {
    const timer = setInterval(() => ctx.log("tick\n"), 100);
    scripted.cleanup(() => clearInterval(timer));
    return { result: new Promise<RunResult>(() => {}), cancel: async () => {} };
  },
};

test("a coordinator answering every message of a job with a gap gets one redial, and the next only 30 s later: not a storm", { timeout: 30_000 }, async () => {
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
  scripted.agent(url, { name: "gapped", adapter: ticking, cancelGraceMs: 100, stopMs: 0 });
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  first!.terminate();
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  // The cut, then one redial for the gaps.
  expect(connections()).toBe(3);
  // About 50 lines in 5 s, a message each or fewer, none sent again before the next redial.
  expect(gapped).toBeLessThan(500);
});

// Found by a review: within the 30 s a second loss got one resend (which a gap with nothing
// refused before it cannot mend), and then nothing, for good.
test("a second loss within 30 s of a gap's redial is mended by a redial once the 30 s have passed", { timeout: 60_000 }, async () => {
  // The real coordinator's rule over a record the test sets back: apply the next number, acknowledge a repeat, report a gap past it.
  let held = 0;
  let assigned = false;
  const { url, connections } = await scripted.coordinator((message, send) => {
    if (message.type === "hello") {
      return send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 60, jobs: assigned ? [{ jobId: "7", seq: held }] : [] });
    }
    if (message.type === "claim" && !assigned) {
      assigned = true;
      return send({ type: "assign", job: JOB });
    }
    if (!("seq" in message)) return;
    if (message.seq <= held + 1) {
      held = Math.max(held, message.seq);
      return send({ type: "ack", jobId: "7", seq: message.seq });
    }
    send({ type: "error", code: "sequence_gap", message: `job 7: expected seq ${held + 1}, got ${message.seq}`, jobId: "7", fatal: false });
  });
  scripted.agent(url, { name: "twice", adapter: ticking, cancelGraceMs: 100, stopMs: 0 });
  await sleep(1_500);
  held -= 3;
  await sleep(2_500);
  expect(connections()).toBe(2);
  held -= 3;
  const lost = held;
  await sleep(34_000);
  expect(connections()).toBe(3);
  expect(held).toBeGreaterThan(lost + 10);
});
