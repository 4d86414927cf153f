// The reaper's statements on both databases: lost agents, queue timeouts, overdue jobs, due retries.
import { expect, it } from "vitest";
import { dueRetries, reapLost, reapOverdue, reapQueueTimeouts, databaseNow } from "../../coordinator/sql/reap.ts";
import { type Claimant, workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { describePostgres, forEachDatabase } from "../support/databases.ts";
import { cancelAllPending, connectAgent, eventsOf, jobApply, order, useDatabase, workOrderInsert } from "./fixtures.ts";

forEachDatabase("the reaper", (kind) => {
  const db = useDatabase(kind);
  let serial = 0;

  async function agentWithJob(body: Record<string, unknown> = {}) {
    const pool = `reap-${++serial}`;
    const agent: Claimant = await connectAgent(db(), pool, { pool });
    await cancelAllPending(db());
    await workOrderInsert(db(), order({ selector: `pool=${pool}`, ...body }));
    const [job] = await workOrderClaim(db(), agent, 1);
    return { agent, job: job! };
  }

  const expireLease = (agentId: string) =>
    db().query(`UPDATE agents SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [agentId]);

  const stateOf = async (table: "jobs" | "work_orders", id: string) =>
    (await db().query<{ state: string }>(`SELECT state FROM ${table} WHERE id = $1`, [id]))[0]!.state;

  it("leaves the jobs of an agent whose lease holds", async () => {
    const { job } = await agentWithJob();
    expect((await reapLost(db())).reaped.map((r) => r.jobId)).not.toContain(job.jobId);
    expect(await stateOf("jobs", job.jobId)).toBe("claimed");
  });

  it("declares the jobs of an agent past its lease lost, and retries their work orders by policy", async () => {
    const { agent, job } = await agentWithJob({ maxAttempts: 2, retryBackoffSeconds: 0 });
    await jobApply(db(), agent.agentId, { type: "job.started", jobId: job.jobId, seq: 1 });
    await expireLease(agent.agentId);
    const { reaped, requeued } = await reapLost(db());
    expect(reaped).toContainEqual({ jobId: job.jobId, workOrderId: job.workOrderId, agentId: agent.agentId });
    // Claimable at once (no backoff), so woken now rather than by a later look for due retries.
    expect(requeued.map((o) => o.id)).toEqual([job.workOrderId]);
    expect(await stateOf("jobs", job.jobId)).toBe("lost");
    expect(await stateOf("work_orders", job.workOrderId)).toBe("pending");
    expect((await eventsOf(db(), job.workOrderId)).at(-1)).toMatchObject({ from_state: "running", to_state: "pending" });
    expect(await reapLost(db())).toEqual({ reaped: [], requeued: [] });
  });

  it("returns the jobs an agent only held: the attempt is not counted, and the work order is woken at once", async () => {
    const { agent, job } = await agentWithJob({ maxAttempts: 1 });
    await expireLease(agent.agentId);
    const { reaped, requeued } = await reapLost(db());
    expect(reaped).toContainEqual({ jobId: job.jobId, workOrderId: job.workOrderId, agentId: agent.agentId });
    expect(requeued).toEqual([{ id: job.workOrderId, selector: expect.any(Object), targetAgent: null }]);
    expect(await stateOf("jobs", job.jobId)).toBe("returned");
    const [order] = await db().query<{ state: string; attempts: number }>(`SELECT state, attempts FROM work_orders WHERE id = $1`, [job.workOrderId]);
    expect(order).toEqual({ state: "pending", attempts: 0 });
    expect((await eventsOf(db(), job.workOrderId)).at(-1)).toMatchObject({ from_state: "claimed", to_state: "pending", reason: "returned before it began" });
    const other = await connectAgent(db(), `${agent.name}-b`, agent.labels);
    const [again] = await workOrderClaim(db(), other, 1);
    expect(again).toMatchObject({ workOrderId: job.workOrderId, attempt: 1, adopt: null });
    expect(again!.jobId).not.toBe(job.jobId);
  });

  it("a job its agent began counts as lost even before it started", async () => {
    const { agent, job } = await agentWithJob({ maxAttempts: 1 });
    await jobApply(db(), agent.agentId, { type: "job.starting", jobId: job.jobId, seq: 1 });
    await expireLease(agent.agentId);
    expect((await reapLost(db())).requeued).toEqual([]);
    expect(await stateOf("jobs", job.jobId)).toBe("lost");
    expect(await stateOf("work_orders", job.workOrderId)).toBe("failed");
  });

  it("a late report from the lost agent is refused", async () => {
    const { agent, job } = await agentWithJob({ maxAttempts: 1 });
    await jobApply(db(), agent.agentId, { type: "job.starting", jobId: job.jobId, seq: 1 });
    await expireLease(agent.agentId);
    await reapLost(db());
    expect(await stateOf("work_orders", job.workOrderId)).toBe("failed");
    const late = await jobApply(db(), agent.agentId, { type: "job.finished", jobId: job.jobId, seq: 2, outcome: "succeeded", exitCode: 0 });
    expect(late).toMatchObject({ kind: "rejected" });
    expect(await stateOf("work_orders", job.workOrderId)).toBe("failed");
  });

  it("ends a pending work order that waited past its queue timeout", async () => {
    await cancelAllPending(db());
    const { row } = await workOrderInsert(db(), order({ selector: "pool=nobody", queueTimeoutSeconds: 5 }));
    const { row: patient } = await workOrderInsert(db(), order({ selector: "pool=nobody", queueTimeoutSeconds: 3600 }));
    expect(await reapQueueTimeouts(db())).not.toContain(row.id);
    await db().query(`UPDATE work_orders SET updated_at = now() - interval '6 seconds', run_after = now() - interval '6 seconds' WHERE id = $1`, [row.id]);
    expect(await reapQueueTimeouts(db())).toEqual([row.id]);
    expect(await stateOf("work_orders", row.id)).toBe("timed_out");
    expect(await stateOf("work_orders", patient.id)).toBe("pending");
    expect((await eventsOf(db(), row.id)).at(-1)).toMatchObject({ to_state: "timed_out", reason: expect.stringMatching(/queue timeout/) });
  });

  it("ends a running job far past its run timeout, naming its agent", async () => {
    const { agent, job } = await agentWithJob({ timeoutSeconds: 10 });
    await jobApply(db(), agent.agentId, { type: "job.started", jobId: job.jobId, seq: 1 });
    expect((await reapOverdue(db(), 30)).reaped).toEqual([]);
    await db().query(`UPDATE jobs SET started_at = now() - interval '41 seconds' WHERE id = $1`, [job.jobId]);
    expect((await reapOverdue(db(), 30)).reaped).toEqual([{ jobId: job.jobId, workOrderId: job.workOrderId, agentId: agent.agentId }]);
    expect(await stateOf("jobs", job.jobId)).toBe("timed_out");
    expect(await stateOf("work_orders", job.workOrderId)).toBe("timed_out");
  });

  it("ends a job still starting far past its run timeout, counted from when its agent said so, and a running one from its run's start", async () => {
    const { agent, job } = await agentWithJob({ timeoutSeconds: 10 });
    await db().query(`UPDATE jobs SET created_at = now() - interval '1 hour' WHERE id = $1`, [job.jobId]);
    await jobApply(db(), agent.agentId, { type: "job.starting", jobId: job.jobId, seq: 1 });
    expect((await reapOverdue(db(), 30)).reaped).toEqual([]);
    await db().query(`UPDATE jobs SET started_at = now() - interval '41 seconds' WHERE id = $1`, [job.jobId]);
    // One whose start took as long is counted from its run's start: its agent stops it a grace after
    // the timeout counted from before job.starting, and the reaper, its backstop, comes later still.
    const slow = await agentWithJob({ timeoutSeconds: 10 });
    await jobApply(db(), slow.agent.agentId, { type: "job.starting", jobId: slow.job.jobId, seq: 1 });
    await db().query(`UPDATE jobs SET started_at = now() - interval '41 seconds' WHERE id = $1`, [slow.job.jobId]);
    await jobApply(db(), slow.agent.agentId, { type: "job.started", jobId: slow.job.jobId, seq: 2 });
    expect((await reapOverdue(db(), 30)).reaped).toEqual([{ jobId: job.jobId, workOrderId: job.workOrderId, agentId: agent.agentId }]);
    expect(await stateOf("jobs", job.jobId)).toBe("timed_out");
    expect(await stateOf("jobs", slow.job.jobId)).toBe("running");
  });

  it("finds the retries that became due in a window, reaching back 5 s before it for settles that committed late", async () => {
    const { agent, job } = await agentWithJob({ maxAttempts: 2, retryBackoffSeconds: 0 });
    await jobApply(db(), agent.agentId, { type: "job.starting", jobId: job.jobId, seq: 1 });
    const before = await databaseNow(db());
    await jobApply(db(), agent.agentId, { type: "job.finished", jobId: job.jobId, seq: 2, outcome: "lost", exitCode: null });
    const after = await databaseNow(db());
    expect((await dueRetries(db(), before, after)).map((o) => o.id)).toEqual([job.workOrderId]);
    const [row] = await db().query<{ runAfter: string }>(`SELECT run_after::text AS "runAfter" FROM work_orders WHERE id = $1`, [job.workOrderId]);
    const runAfter = row!.runAfter;
    expect((await dueRetries(db(), runAfter, runAfter)).map((o) => o.id)).toEqual([job.workOrderId]);
    const past = async (interval: string) =>
      (await db().query<{ t: string }>(`SELECT ($1::timestamptz + $2::interval)::text AS t`, [runAfter, interval]))[0]!.t;
    // A look that began up to 5 s after it still finds it; one that began later does not.
    const late = await past("5 seconds");
    expect((await dueRetries(db(), late, late)).map((o) => o.id)).toEqual([job.workOrderId]);
    const later = await past("5 seconds 1 microsecond");
    expect(await dueRetries(db(), later, later)).toEqual([]);
  });
});

// Needs a second connection while a transaction holds the agent's row: a real server.
describePostgres("the reaper and a reconnect in flight", () => {
  const db = useDatabase("postgres");

  it("leaves the jobs of an agent whose lease another coordinator is renewing, and reaps them if that renewal never commits", async () => {
    const agent = await connectAgent(db(), "reconnecting", { pool: "reconnecting" });
    await cancelAllPending(db());
    await workOrderInsert(db(), order({ selector: "pool=reconnecting" }));
    const [job] = await workOrderClaim(db(), agent, 1);
    await db().query(`UPDATE agents SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [agent.agentId]);

    const renewal = db().transaction(async (tx) => {
      await tx.query(`UPDATE agents SET lease_expires_at = now() + interval '30 seconds' WHERE id = $1`, [agent.agentId]);
      // Meanwhile another coordinator's reaper looks at the lease the database still holds.
      expect((await reapLost(db())).reaped.map((r) => r.jobId)).not.toContain(job!.jobId);
      throw new Error("the reconnect failed");
    });
    await expect(renewal).rejects.toThrow("the reconnect failed");
    expect((await reapLost(db())).reaped.map((r) => r.jobId)).toContain(job!.jobId);
  });
});
