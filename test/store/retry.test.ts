// A job's ending moves its work order by the retry policy: back to pending (claimable only after
// its backoff, as a new attempt with its own job) or to its final state.
import { expect, it } from "vitest";
import type { Database } from "../../coordinator/db/database.ts";
import { workOrderCancel } from "../../coordinator/sql/work-order-cancel.ts";
import { type Claimant, workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { forEachDatabase } from "../support/databases.ts";
import { cancelAllPending, connectAgent, eventsOf, jobApply, order, useDatabase, workOrderInsert } from "./fixtures.ts";

type End = Extract<JobMessage, { type: "job.finished" }>;

forEachDatabase("retries", (kind) => {
  const db = useDatabase(kind);
  let agent: Claimant;

  async function claimed(body: Record<string, unknown>) {
    agent ??= await connectAgent(db(), "retrier", { pool: "retry" });
    await cancelAllPending(db());
    const { row } = await workOrderInsert(db(), order({ selector: "pool=retry", ...body }));
    const [job] = await workOrderClaim(db(), agent, 1);
    expect(job?.workOrderId).toBe(row.id);
    // Begun, so that losing it counts (a job lost before it began is only returned).
    await jobApply(db(), agent.agentId, { type: "job.starting", jobId: job!.jobId, seq: 1 });
    return job!;
  }

  const finish = (jobId: string, end: Partial<End>): End => ({ type: "job.finished", jobId, seq: 2, outcome: "failed", exitCode: null, ...end });

  async function orderRow(d: Database, id: string) {
    const [row] = await d.query<{ state: string; attempts: number; due: boolean; wait: number }>(
      `SELECT state, attempts, run_after <= now() AS due, extract(epoch FROM run_after - now())::float AS wait
       FROM work_orders WHERE id = $1`,
      [id],
    );
    return row!;
  }

  it("a retry without backoff is claimable at once, and says so for a wake-up; one with backoff does not", async () => {
    const now = await claimed({ maxAttempts: 3, retryBackoffSeconds: 0 });
    const applied = await jobApply(db(), agent.agentId, finish(now.jobId, { outcome: "lost" }));
    expect(applied).toMatchObject({ kind: "applied", requeued: { id: now.workOrderId } });
    const later = await claimed({ maxAttempts: 3, retryBackoffSeconds: 60 });
    const waiting = await jobApply(db(), agent.agentId, finish(later.jobId, { outcome: "lost" }));
    expect(waiting).toEqual({ kind: "applied", workOrderId: later.workOrderId });
  });

  it("a lost job sends its work order back to pending, claimable after the backoff", async () => {
    const job = await claimed({ maxAttempts: 3, retryBackoffSeconds: 60 });
    expect(await jobApply(db(), agent.agentId, finish(job.jobId, { outcome: "lost" }))).toMatchObject({ kind: "applied" });
    const row = await orderRow(db(), job.workOrderId);
    expect(row).toMatchObject({ state: "pending", attempts: 1, due: false });
    expect(row.wait).toBeGreaterThan(25);
    expect(row.wait).toBeLessThanOrEqual(60);
    expect(await workOrderClaim(db(), agent, 10)).toEqual([]);
    expect((await eventsOf(db(), job.workOrderId)).at(-1)).toMatchObject({
      from_state: "claimed",
      to_state: "pending",
      job_id: job.jobId,
      reason: "retry after lost (attempt 1 of 3)",
    });
  });

  it("once due, the retry is claimed as attempt 2 with a job of its own", async () => {
    const job = await claimed({ maxAttempts: 2, retryBackoffSeconds: 0 });
    await jobApply(db(), agent.agentId, finish(job.jobId, { outcome: "failed", infrastructure: true }));
    expect(await orderRow(db(), job.workOrderId)).toMatchObject({ state: "pending", due: true });
    const [again] = await workOrderClaim(db(), agent, 1);
    expect(again).toMatchObject({ workOrderId: job.workOrderId, attempt: 2 });
    expect(again!.jobId).not.toBe(job.jobId);
    await jobApply(db(), agent.agentId, { ...finish(again!.jobId, { outcome: "failed", infrastructure: true }), seq: 1 });
    expect(await orderRow(db(), job.workOrderId)).toMatchObject({ state: "failed", attempts: 2 });
    expect((await eventsOf(db(), job.workOrderId)).at(-1)).toMatchObject({ to_state: "failed", reason: "infrastructure error" });
  });

  it("the job's own failure ends the work order unless retryOn asks for it", async () => {
    const plain = await claimed({ maxAttempts: 5, retryBackoffSeconds: 0 });
    await jobApply(db(), agent.agentId, finish(plain.jobId, { outcome: "failed", exitCode: 1 }));
    expect(await orderRow(db(), plain.workOrderId)).toMatchObject({ state: "failed" });

    const asked = await claimed({ maxAttempts: 5, retryBackoffSeconds: 0, retryOn: ["failed"] });
    await jobApply(db(), agent.agentId, finish(asked.jobId, { outcome: "failed", exitCode: 1 }));
    expect(await orderRow(db(), asked.workOrderId)).toMatchObject({ state: "pending" });
  });

  it("a lost job whose cancel was requested ends cancelled, not retried", async () => {
    const job = await claimed({ maxAttempts: 5 });
    expect(await workOrderCancel(db(), job.workOrderId, "stop")).toMatchObject({ kind: "requested" });
    await jobApply(db(), agent.agentId, finish(job.jobId, { outcome: "lost" }));
    expect(await orderRow(db(), job.workOrderId)).toMatchObject({ state: "cancelled" });
  });

  it("a lost job with no attempts left fails the work order, saying why", async () => {
    const job = await claimed({ maxAttempts: 1 });
    await jobApply(db(), agent.agentId, finish(job.jobId, { outcome: "lost" }));
    expect(await orderRow(db(), job.workOrderId)).toMatchObject({ state: "failed" });
    expect((await eventsOf(db(), job.workOrderId)).at(-1)).toMatchObject({ reason: "the agent was lost" });
  });
  it("a history of three attempts reads in order, whether an older version stored its claims or not", async () => {
    // Older versions stored each claim as an event, in the claim's statement; a rolling upgrade
    // leaves histories with the first claims stored and the later ones not.
    const storeClaim = (jobId: string) =>
      db().query(
        `INSERT INTO work_order_events (work_order_id, job_id, from_state, to_state, created_at)
         SELECT work_order_id, id, 'pending', 'claimed', created_at FROM jobs WHERE id = $1`,
        [jobId],
      );
    const history = async (stored: number) => {
      const first = await claimed({ maxAttempts: 3, retryBackoffSeconds: 0 });
      if (stored > 0) await storeClaim(first.jobId);
      const jobs = [first.jobId];
      const next = async () => {
        const [job] = await workOrderClaim(db(), agent, 1);
        jobs.push(job!.jobId);
        if (jobs.length <= stored) await storeClaim(job!.jobId);
        await jobApply(db(), agent.agentId, { type: "job.started", jobId: job!.jobId, seq: 1 });
        return job!.jobId;
      };
      await jobApply(db(), agent.agentId, finish(first.jobId, { outcome: "lost" }));
      await jobApply(db(), agent.agentId, finish(await next(), { outcome: "failed", infrastructure: true }));
      await jobApply(db(), agent.agentId, finish(await next(), { outcome: "succeeded", exitCode: 0 }));
      return { jobs, events: await eventsOf(db(), first.workOrderId) };
    };
    const event = (job: string | null, from: string | null, to: string, reason: string | null = null) => ({ job_id: job, from_state: from, to_state: to, reason });
    for (const stored of [0, 1, 3]) {
      const { jobs, events } = await history(stored);
      expect(events, `${stored} claims stored`).toEqual([
        event(null, null, "pending"),
        event(jobs[0]!, "pending", "claimed"),
        event(jobs[0]!, "claimed", "pending", "retry after lost (attempt 1 of 3)"),
        event(jobs[1]!, "pending", "claimed"),
        event(jobs[1]!, "claimed", "running"),
        event(jobs[1]!, "running", "pending", "retry after infrastructure (attempt 2 of 3)"),
        event(jobs[2]!, "pending", "claimed"),
        event(jobs[2]!, "claimed", "running"),
        event(jobs[2]!, "running", "succeeded"),
      ]);
    }
  });
});
