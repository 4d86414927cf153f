// A batch of job messages decided together and written in one statement must leave the database
// exactly as applying the same messages one transaction at a time would: same answers, same jobs,
// same logs, same work orders and the same event trail, in the same order.
import { expect, it } from "vitest";
import type { Database } from "../../coordinator/db/database.ts";
import { type Applied, jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { outcomes } from "../../protocol/states.ts";
import { forEachDatabase } from "../support/databases.ts";
import { connectAgent, jobApply, order, seededRandom, useDatabase, workOrderInsert } from "./fixtures.ts";

const JOBS = 6;
type Body = { type: JobMessage["type"]; seq: number } & Record<string, unknown>;
type Script = { job: number; agent: "own" | "other"; message: Body }[];

/** Random traffic for JOBS jobs: mostly in sequence, with repeats, gaps, strangers and illegal moves. */
function script(seed: number): Script {
  const rnd = seededRandom(seed);
  const seqs = Array.from({ length: JOBS }, () => 0);
  const out: Script = [];
  for (let i = 0; i < 60; i++) {
    const job = Math.floor(rnd() * JOBS);
    const roll = rnd();
    const seq = roll < 0.08 ? Math.max(1, seqs[job]!) : roll < 0.12 ? seqs[job]! + 2 : ++seqs[job]!;
    const kind = rnd();
    const message: Body =
      kind < 0.1
        ? { type: "job.starting", seq }
        : kind < 0.25
        ? { type: "job.started", seq, ...(rnd() < 0.5 ? { externalId: `run-${i}`, externalUrl: null } : {}) }
        : kind < 0.55
          ? { type: "job.log", seq, data: `line ${i} ünïcode\n` }
          : kind < 0.7
            ? { type: "job.status", seq, status: `step ${i}` }
            : {
                type: "job.finished",
                seq,
                outcome: outcomes[Math.floor(rnd() * outcomes.length)]!,
                exitCode: rnd() < 0.5 ? 1 : null,
                infrastructure: rnd() < 0.3,
              };
    out.push({ job, agent: rnd() < 0.05 ? "other" : "own", message });
  }
  return out;
}

forEachDatabase("jobApplyIn", (kind) => {
  const db = useDatabase(kind, 4);
  let n = 0;

  async function jobs(): Promise<{ agentId: string; otherId: string; jobIds: string[]; orderIds: string[] }> {
    const name = `batch-${++n}`;
    const agent = await connectAgent(db(), name, {}, "work-order");
    const other = await connectAgent(db(), `${name}-other`, {}, "work-order");
    const orderIds: string[] = [];
    for (let i = 0; i < JOBS; i++) {
      const retry = i % 2 === 0 ? { maxAttempts: 3, retryOn: ["failed", "lost", "timed_out"], retryBackoffSeconds: 0 } : {};
      orderIds.push((await workOrderInsert(db(), order({ agent: name, ...retry }))).row.id);
    }
    const claimed = await workOrderClaim(db(), agent, JOBS);
    expect(claimed.map((c) => c.workOrderId)).toEqual(orderIds);
    return { agentId: agent.agentId, otherId: other.agentId, jobIds: claimed.map((c) => c.jobId), orderIds };
  }

  /** Everything the messages can change, with ids replaced by the job's index in the set. */
  async function snapshot(d: Database, set: Awaited<ReturnType<typeof jobs>>) {
    const index = (id: string) => set.jobIds.indexOf(id);
    const jobRows = await d.query<Record<string, unknown> & { id: string }>(
      `SELECT id::text AS id, state::text AS state, seq, status, external_id, external_url, log_bytes::text AS log_bytes,
         exit_code, error, infrastructure, started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished
       FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [set.jobIds],
    );
    const logs = await d.query<{ job_id: string }>(
      `SELECT job_id::text AS job_id, "offset"::text AS "offset", data FROM job_logs WHERE job_id = ANY($1::bigint[]) ORDER BY job_id, "offset"`,
      [set.jobIds],
    );
    const orders = await d.query<{ id: string }>(
      `SELECT id::text AS id, state::text AS state, attempts FROM work_orders WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [set.orderIds],
    );
    const events = await d.query<{ work_order_id: string; job_id: string }>(
      `SELECT work_order_id::text AS work_order_id, job_id::text AS job_id, from_state::text AS from_state, to_state::text AS to_state, reason
       FROM work_order_events WHERE work_order_id = ANY($1::bigint[]) AND from_state IS NOT NULL ORDER BY id`,
      [set.orderIds],
    );
    return {
      jobs: jobRows.map(({ id, ...rest }) => ({ job: index(id), ...rest })).sort((a, b) => a.job - b.job),
      logs: logs.map(({ job_id, ...rest }) => ({ job: index(job_id), ...rest })).sort((a, b) => a.job - b.job),
      orders: orders.map(({ id, ...rest }) => ({ order: set.orderIds.indexOf(id), ...rest })).sort((a, b) => a.order - b.order),
      events: events.map(({ work_order_id, job_id, ...rest }) => ({ order: set.orderIds.indexOf(work_order_id), job: index(job_id), ...rest })),
    };
  }

  for (const seed of [1, 2, 3, 4]) {
    it(`one batch leaves the same answers and rows as one transaction per message (seed ${seed})`, async () => {
      const traffic = script(seed);
      const batched = await jobs();
      const single = await jobs();
      const incoming = (set: typeof batched) =>
        traffic.map(({ job, agent, message }) => ({
          agentId: agent === "own" ? set.agentId : set.otherId,
          message: { ...message, jobId: set.jobIds[job]! } as JobMessage,
        }));

      const together = await db().transaction((tx) => jobApplyIn(tx, incoming(batched)));
      const apart: Applied[] = [];
      for (const { agentId, message } of incoming(single)) apart.push(await jobApply(db(), agentId, message));

      const answers = (set: typeof batched, applied: Applied[]) =>
        applied.map((a) =>
          a.kind === "applied"
            ? { ...a, workOrderId: set.orderIds.indexOf(a.workOrderId), ...(a.requeued && { requeued: set.orderIds.indexOf(a.requeued.id) }) }
            : a.kind === "rejected"
              ? { ...a, reason: a.reason.replace(/job \d+/, (m) => `job #${set.jobIds.indexOf(m.slice(4))}`) }
              : a,
        );
      expect(answers(batched, together)).toEqual(answers(single, apart));
      // The traffic exercises every kind of answer, not only the happy path.
      const kinds = new Set(apart.map((a) => a.kind));
      for (const k of ["applied", "duplicate", "gap", "unknown", "rejected"]) expect(kinds).toContain(k);
      expect(await snapshot(db(), batched)).toEqual(await snapshot(db(), single));
    });
  }

  it("a batch that fails to write leaves nothing behind, so the resent messages apply in full", async () => {
    const set = await jobs();
    const [jobId] = set.jobIds;
    const messages: JobMessage[] = [
      { type: "job.started", jobId: jobId!, seq: 1 },
      { type: "job.log", jobId: jobId!, seq: 2, data: "before the crash\n" },
      { type: "job.finished", jobId: jobId!, seq: 3, outcome: "succeeded", exitCode: 0 },
    ];
    const crash = new Error("coordinator died between deciding and committing");
    await expect(
      db().transaction(async (tx) => {
        await jobApplyIn(tx, messages.map((message) => ({ agentId: set.agentId, message })));
        throw crash;
      }),
    ).rejects.toBe(crash);
    const [untouched] = await db().query<{ state: string; seq: number }>(`SELECT state::text AS state, seq FROM jobs WHERE id = $1`, [jobId]);
    expect(untouched).toEqual({ state: "claimed", seq: 0 });

    const again = await db().transaction((tx) => jobApplyIn(tx, messages.map((message) => ({ agentId: set.agentId, message }))));
    expect(again.map((a) => a.kind)).toEqual(["applied", "applied", "applied"]);
    const [done] = await db().query<{ state: string; seq: number; log_bytes: string }>(
      `SELECT state::text AS state, seq, log_bytes::text AS log_bytes FROM jobs WHERE id = $1`,
      [jobId],
    );
    expect(done).toEqual({ state: "succeeded", seq: 3, log_bytes: String(Buffer.byteLength("before the crash\n")) });
  });
});
