// Applies one job-scoped message from an agent, exactly once: the job row (and its work order) is
// locked, the message's sequence number must be the next one (a repeat is acknowledged and
// ignored), and any state change must be one the protocol's state machine allows.
import type { JobMessage } from "../../protocol/messages.ts";
import { jobMachine, type JobState, workOrderMachine } from "../../protocol/states.ts";
import type { Database, Queryable } from "../db/database.ts";
import { jobSettle, SETTLING_COLUMNS, type Settling } from "./job-settle.ts";

export type Applied =
  | { kind: "applied"; workOrderId: string }
  | { kind: "duplicate" }
  | { kind: "gap"; expected: number }
  | { kind: "unknown" }
  | { kind: "rejected"; reason: string };

type LockedJob = Settling & { state: JobState; seq: number; log_bytes: string };

const LOCK = `
SELECT j.state, j.seq, j.log_bytes, ${SETTLING_COLUMNS}
FROM jobs j JOIN work_orders wo ON wo.id = j.work_order_id
WHERE j.id = $1 AND j.agent_id = $2
FOR UPDATE OF j, wo`;

const APPEND_LOG = `
WITH chunk AS (INSERT INTO job_logs (job_id, "offset", data) VALUES ($1, $3, $4))
UPDATE jobs SET seq = $2, log_bytes = log_bytes + octet_length($4) WHERE id = $1`;

const START = `
WITH j AS (
  UPDATE jobs SET seq = $2, state = 'running', started_at = now(),
    external_id = coalesce($3, external_id), external_url = coalesce($4, external_url)
  WHERE id = $1 RETURNING id, work_order_id
), wo AS (
  UPDATE work_orders w SET state = 'running', updated_at = now() FROM j
  WHERE $5 AND w.id = j.work_order_id
), event AS (
  INSERT INTO work_order_events (work_order_id, job_id, from_state, to_state)
  SELECT j.work_order_id, j.id, $6::text::work_order_state, 'running' FROM j WHERE $5
)
SELECT 1`;

const STATUS = `
UPDATE jobs SET seq = $2, status = $3, external_id = coalesce($4, external_id), external_url = coalesce($5, external_url)
WHERE id = $1`;

const CONSUME = `UPDATE jobs SET seq = $2 WHERE id = $1`;

function refusal(job: LockedJob, msg: JobMessage): string | undefined {
  const to = msg.type === "job.started" ? "running" : msg.type === "job.finished" ? msg.outcome : undefined;
  if (to === undefined) return jobMachine.isTerminal(job.state) ? `job ${msg.jobId} has already ended (${job.state})` : undefined;
  return jobMachine.can(job.state, to) ? undefined : `job ${msg.jobId} is ${job.state}; ${msg.type} would make it ${to}`;
}

async function apply(tx: Queryable, job: LockedJob, msg: JobMessage): Promise<void> {
  switch (msg.type) {
    case "job.log":
      return void (await tx.query(APPEND_LOG, [msg.jobId, msg.seq, job.log_bytes, msg.data]));
    case "job.status":
      return void (await tx.query(STATUS, [msg.jobId, msg.seq, msg.status, msg.externalId ?? null, msg.externalUrl ?? null]));
    case "job.started": {
      const moves = job.latest && workOrderMachine.can(job.order_state, "running");
      const params = [msg.jobId, msg.seq, msg.externalId ?? null, msg.externalUrl ?? null, moves, job.order_state];
      return void (await tx.query(START, params));
    }
    case "job.finished": {
      const { outcome, exitCode, seq } = msg;
      await jobSettle(tx, job, { outcome, exitCode, seq, error: msg.error ?? null, infrastructure: msg.infrastructure ?? false });
    }
  }
}

/** Applies one message inside the caller's transaction (several may share one). */
export async function jobApplyIn(tx: Queryable, agentId: string, msg: JobMessage): Promise<Applied> {
  const [job] = await tx.query<LockedJob>(LOCK, [msg.jobId, agentId]);
  if (!job) return { kind: "unknown" };
  if (msg.seq <= job.seq) return { kind: "duplicate" };
  if (msg.seq > job.seq + 1) return { kind: "gap", expected: job.seq + 1 };
  const refused = refusal(job, msg);
  if (refused) {
    await tx.query(CONSUME, [msg.jobId, msg.seq]);
    return { kind: "rejected", reason: refused };
  }
  await apply(tx, job, msg);
  return { kind: "applied", workOrderId: job.work_order_id };
}

export function jobApply(db: Database, agentId: string, msg: JobMessage): Promise<Applied> {
  return db.transaction((tx) => jobApplyIn(tx, agentId, msg));
}
