// Applies one job-scoped message from an agent, exactly once: the job row is locked, the message's
// sequence number must be the next one (a repeat is acknowledged and ignored), and any state
// change must be one the protocol's state machine allows.
import type { JobMessage } from "../../protocol/messages.ts";
import { canTransition, isTerminal, type JobState } from "../../protocol/states.ts";
import type { Database, Queryable } from "../db/database.ts";

export type Applied =
  | { kind: "applied"; workOrderId: string }
  | { kind: "duplicate" }
  | { kind: "gap"; expected: number }
  | { kind: "unknown" }
  | { kind: "rejected"; reason: string };

type LockedJob = { state: JobState; seq: number; work_order_id: string; log_bytes: string };

const LOCK = `SELECT state, seq, work_order_id, log_bytes FROM jobs WHERE id = $1 AND agent_id = $2 FOR UPDATE`;

const APPEND_LOG = `
WITH chunk AS (INSERT INTO job_logs (job_id, "offset", data) VALUES ($1, $3, $4))
UPDATE jobs SET seq = $2, log_bytes = log_bytes + octet_length($4) WHERE id = $1`;

const UPDATE = `
WITH j AS (
  UPDATE jobs SET seq = $2, state = $3::text::job_state,
    started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
    finished_at = CASE WHEN $4 THEN now() ELSE finished_at END,
    status = coalesce($5, status), external_id = coalesce($6, external_id),
    external_url = coalesce($7, external_url), exit_code = coalesce($8, exit_code), error = coalesce($9, error)
  WHERE id = $1 RETURNING id, work_order_id
), wo AS (
  UPDATE work_orders w SET state = $3::text::work_order_state, updated_at = now() FROM j
  WHERE $10 AND w.id = j.work_order_id AND w.latest_job_id = j.id
), event AS (
  INSERT INTO work_order_events (work_order_id, job_id, from_state, to_state)
  SELECT j.work_order_id, j.id, $11::text::work_order_state, $3::text::work_order_state FROM j WHERE $10
)
SELECT 1`;

type Change = {
  to: JobState;
  status?: string;
  externalId?: string;
  externalUrl?: string;
  exitCode?: number | null;
  error?: string;
};

function changeOf(msg: Exclude<JobMessage, { type: "job.log" }>, from: JobState): Change {
  switch (msg.type) {
    case "job.started":
      return { to: "running", externalId: msg.externalId, externalUrl: msg.externalUrl };
    case "job.status":
      return { to: from, status: msg.status, externalId: msg.externalId, externalUrl: msg.externalUrl };
    case "job.finished":
      return { to: msg.outcome, exitCode: msg.exitCode, error: msg.error };
  }
}

async function update(tx: Queryable, msg: JobMessage, from: JobState, change: Change): Promise<void> {
  const transition = change.to !== from;
  await tx.query(UPDATE, [
    msg.jobId,
    msg.seq,
    change.to,
    transition && isTerminal(change.to),
    change.status ?? null,
    change.externalId ?? null,
    change.externalUrl ?? null,
    change.exitCode ?? null,
    change.error ?? null,
    transition,
    from,
  ]);
}

async function apply(tx: Queryable, job: LockedJob, msg: JobMessage): Promise<Applied> {
  const applied = { kind: "applied", workOrderId: job.work_order_id } as const;
  if (msg.type === "job.log") {
    await tx.query(APPEND_LOG, [msg.jobId, msg.seq, job.log_bytes, msg.data]);
    return applied;
  }
  const change = changeOf(msg, job.state);
  // job.started and job.finished always move the job, so a repeat (say a second job.finished with
  // the same outcome) is illegal too; job.status leaves the state as it is, but only while it runs.
  const legal = msg.type === "job.status" ? !isTerminal(job.state) : canTransition(job.state, change.to);
  if (!legal) {
    await tx.query(`UPDATE jobs SET seq = $2 WHERE id = $1`, [msg.jobId, msg.seq]);
    return { kind: "rejected", reason: `job ${msg.jobId} is ${job.state}; ${msg.type} would make it ${change.to}` };
  }
  await update(tx, msg, job.state, change);
  return applied;
}

export async function jobApply(db: Database, agentId: string, msg: JobMessage): Promise<Applied> {
  return db.transaction(async (tx) => {
    const [job] = await tx.query<LockedJob>(LOCK, [msg.jobId, agentId]);
    if (!job) return { kind: "unknown" };
    if (msg.seq <= job.seq) return { kind: "duplicate" };
    if (msg.seq > job.seq + 1) return { kind: "gap", expected: job.seq + 1 };
    return apply(tx, job, msg);
  });
}
