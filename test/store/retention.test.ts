// Retention: work orders that ended longer ago than it go with their jobs, logs and events, in
// batches; open work orders, recent endings and agents holding jobs stay; a job still names an
// agent whose row went.
import { expect, it } from "vitest";
import type { Database } from "../../coordinator/db/database.ts";
import { jobGet } from "../../coordinator/sql/job-read.ts";
import { purgeExpired } from "../../coordinator/sql/retention.ts";
import { tokenCreate, tokenRevoke } from "../../coordinator/auth/tokens.ts";
import { agentConnect, agentDisconnect } from "../../coordinator/sql/agent-session.ts";
import { type Claimant, workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { forEachDatabase } from "../support/databases.ts";
import { connectAgent, eventsOf, jobApply, order, useDatabase, workOrderInsert } from "./fixtures.ts";

const RETAIN_DAYS = 30;

forEachDatabase("retention", (kind) => {
  const db = useDatabase(kind);

  /** A work order addressed to `agent`, claimed; `messages` (given the job id) applied in turn. */
  async function addressed(agent: Claimant, messages: ((jobId: string) => JobMessage)[] = [], maxAttempts = 1) {
    const { row } = await workOrderInsert(db(), order({ agent: agent.name, maxAttempts }));
    const [assignment] = await workOrderClaim(db(), agent, 1);
    if (assignment?.workOrderId !== row.id) throw new Error("the test's work order was not claimed");
    for (const message of messages) expect((await jobApply(db(), agent.agentId, message(assignment.jobId))).kind).toBe("applied");
    return { id: row.id, jobId: assignment.jobId };
  }

  const started = (jobId: string): JobMessage => ({ type: "job.started", jobId, seq: 1 });
  const logged = (jobId: string): JobMessage => ({ type: "job.log", jobId, seq: 2, data: "a line\n" });
  const succeeded = (jobId: string): JobMessage => ({ type: "job.finished", jobId, seq: 3, outcome: "succeeded", exitCode: 0 });
  const ended = [started, logged, succeeded];

  const age = (table: string, ids: string[], days: number, columns: string[]) =>
    db().query(`UPDATE ${table} SET ${columns.map((c) => `${c} = now() - make_interval(days => $2)`).join(", ")} WHERE id = ANY($1::bigint[])`, [
      ids,
      days,
    ]);
  const count = async (sql: string, params: unknown[]) => Number((await db().query<{ n: number }>(`SELECT count(*)::int AS n ${sql}`, params))[0]!.n);
  const rowsOf = async (ids: string[], jobIds: string[]) => ({
    workOrders: await count(`FROM work_orders WHERE id = ANY($1::bigint[])`, [ids]),
    jobs: await count(`FROM jobs WHERE id = ANY($1::bigint[]) OR work_order_id = ANY($2::bigint[])`, [jobIds, ids]),
    logs: await count(`FROM job_logs WHERE job_id = ANY($1::bigint[])`, [jobIds]),
    events: await count(`FROM work_order_events WHERE work_order_id = ANY($1::bigint[])`, [ids]),
  });

  it("works through a backlog in batches, a pass at most a thousand, and says when it stopped with more left", async () => {
    const ids = await backlog(db(), 1_150);
    const first = await purgeExpired(db(), RETAIN_DAYS);
    expect(first).toMatchObject({ workOrders: 1_000, more: true });
    expect(await purgeExpired(db(), RETAIN_DAYS)).toMatchObject({ workOrders: 150, more: false });
    expect(await count(`FROM work_orders WHERE id = ANY($1::bigint[])`, [ids])).toBe(0);
  });

  it("deletes work orders ended before it with their jobs, logs and events, and keeps the rest", async () => {
    const worker = await connectAgent(db(), `retention-worker-${kind}`, {}, "work-order");
    const old = await addressed(worker, ended);
    // Returned once before it ran, then ended: both its jobs go.
    const { id: twiceId, jobId: returnedJob } = await addressed(worker, [(jobId) => ({ type: "job.finished", jobId, seq: 1, outcome: "returned", exitCode: null })], 2);
    const [again] = await workOrderClaim(db(), worker, 1);
    for (const message of ended) await jobApply(db(), worker.agentId, message(again!.jobId));
    const recent = await addressed(worker, ended);
    const stillRunning = await addressed(worker, [started]);
    const longLived = await addressed(worker, ended);
    const { ids: [pending] } = await workOrderInsertMany(db(), [order({ selector: "retention=none" })]);

    for (const id of [old.id, twiceId, stillRunning.id, longLived.id, pending!]) await age("work_orders", [id], 40, ["created_at", "updated_at"]);
    await age("work_orders", [longLived.id], 1, ["updated_at"]);
    await age("work_orders", [recent.id], 1, ["created_at", "updated_at"]);

    const before = await rowsOf([old.id, twiceId], [old.jobId, returnedJob, again!.jobId]);
    // Stored events: each job's claim is its job, so the old one's are running and succeeded; the
    // other's, returned (to pending), then running and succeeded.
    expect(before).toEqual({ workOrders: 2, jobs: 3, logs: 2, events: 2 + 3 });
    const kept = [recent, stillRunning, longLived];
    const keptBefore = await rowsOf([...kept.map((o) => o.id), pending!], kept.map((o) => o.jobId));

    expect(await purgeExpired(db(), RETAIN_DAYS)).toMatchObject({ workOrders: 2, more: false });
    expect(await rowsOf([old.id, twiceId], [old.jobId, returnedJob, again!.jobId])).toEqual({ workOrders: 0, jobs: 0, logs: 0, events: 0 });
    expect(await rowsOf([...kept.map((o) => o.id), pending!], kept.map((o) => o.jobId))).toEqual(keptBefore);
    expect(await eventsOf(db(), longLived.id)).toHaveLength(4); // its creation, then three transitions
    expect(await purgeExpired(db(), RETAIN_DAYS)).toMatchObject({ workOrders: 0 });
  });

  it("forgets agents unseen for it that hold no job, while their jobs keep their names", async () => {
    const name = (role: string) => `retention-${role}-${kind}`;
    const gone = await connectAgent(db(), name("gone"), {}, "work-order");
    const goneJob = await addressed(gone, ended);
    const holding = await connectAgent(db(), name("holding"), {}, "work-order");
    await addressed(holding, [started]);
    const connected = await connectAgent(db(), name("connected"), {}, "work-order");
    // Marked connected by a coordinator that stopped without recording the disconnect.
    const stranded = await connectAgent(db(), name("stranded"), {}, "work-order");
    for (const agent of [gone, holding]) await agentDisconnect(db(), agent.agentId, `session-${agent.name}`, 0);
    await age("agents", [gone.agentId, holding.agentId, connected.agentId, stranded.agentId], 40, ["last_seen_at", "lease_expires_at"]);
    await db().query(`UPDATE agents SET lease_expires_at = now() + interval '30 seconds' WHERE id = $1`, [connected.agentId]);

    const { agents } = await purgeExpired(db(), RETAIN_DAYS);
    expect(agents).toBe(2);
    const names = await db().query<{ name: string }>(`SELECT name FROM agents WHERE name LIKE $1 ORDER BY name`, [`retention-%-${kind}`]);
    expect(names.map((a) => a.name)).toEqual([name("connected"), name("holding"), `retention-worker-${kind}`]);
    expect((await jobGet(db(), goneJob.jobId))?.agent).toBe(name("gone"));

    // Back under the same name, it is a new row, and its old jobs are still its name's.
    const back = await connectAgent(db(), name("gone"), {}, "work-order");
    expect(back.agentId).not.toBe(gone.agentId);
    expect((await jobGet(db(), goneJob.jobId))?.agent).toBe(name("gone"));
  });

  it("keeps an agent's name bound to its token while the token is good, and lets it go once revoked", async () => {
    const [owner, other, revoked] = await Promise.all(["owner", "other", "revoked"].map((t) => tokenCreate(db(), `retention-${t}-${kind}`, "agent")));
    const hello = (name: string, tokenId: string) =>
      agentConnect(db(), { name, labels: {}, capacity: 1, mode: "work-order", version: "test", tokenId }, `session-${name}-${tokenId}`);
    const bound = `retention-bound-${kind}`;
    const lapsed = `retention-lapsed-${kind}`;
    const ids = [(await hello(bound, owner!.view.id))!.id, (await hello(lapsed, revoked!.view.id))!.id];
    for (const [i, id] of ids.entries()) await agentDisconnect(db(), id, `session-${[bound, lapsed][i]}-${[owner, revoked][i]!.view.id}`, 0);
    await age("agents", ids, 40, ["last_seen_at", "lease_expires_at"]);
    expect(await tokenRevoke(db(), revoked!.view.id)).toBe(true);

    expect((await purgeExpired(db(), RETAIN_DAYS)).agents).toBe(1);
    expect(await hello(bound, other!.view.id)).toBeUndefined();
    expect((await hello(bound, owner!.view.id))?.id).toBe(ids[0]);
    expect(await hello(lapsed, other!.view.id)).toBeDefined();
  });
});

/** Ended work orders created and ended 40 days ago (cancelled while pending: no job). */
async function backlog(db: Database, n: number): Promise<string[]> {
  const { ids } = await workOrderInsertMany(db, Array.from({ length: n }, () => order({ selector: "retention=backlog" })));
  await db.query(
    `UPDATE work_orders SET state = 'cancelled', created_at = now() - interval '40 days', updated_at = now() - interval '40 days' WHERE id = ANY($1::bigint[])`,
    [ids],
  );
  return ids;
}
