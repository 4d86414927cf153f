// Applies job-scoped messages from agents, each exactly once. A batch locks every job it touches
// (with its work order) in one statement, decides each message in arrival order against the jobs'
// state as the batch leaves it: the sequence number must be the next one (a repeat is acknowledged
// and ignored), and any state change must be one the protocol's state machine allows; then writes
// everything it decided in one more statement.
import type { JobMessage } from "../../protocol/messages.ts";
import { jobMachine, type JobState, type WorkOrderState, workOrderMachine } from "../../protocol/states.ts";
import type { Enqueued } from "../bus.ts";
import type { Queryable } from "../db/database.ts";
import { jobSettle, SETTLING_COLUMNS, type Settling } from "./job-settle.ts";
import { JobWrites } from "./job-writes.ts";

export type Applied =
  /** `requeued`: its work order is back in the queue and claimable now (returned unbegun, or retried without backoff). */
  | { kind: "applied"; workOrderId: string; requeued?: Enqueued }
  /** `ended`: whether the job has ended (a finish sent again), or runs on (the number was another message's). */
  | { kind: "duplicate"; ended: boolean }
  | { kind: "gap"; expected: number }
  | { kind: "unknown" }
  | { kind: "rejected"; reason: string; ended: boolean };

/** `holdSeconds`: a retry of the job, should its message end it, waits at least this long. */
export type Incoming = { agentId: string; message: JobMessage; holdSeconds?: number };

type LockedJob = Settling & { agent_id: string; seq: number; log_bytes: string };

// Locked in work order then job order, so two batches in flight cannot deadlock over them. The
// work orders are named by key too: left to the join, the planner merge-joined the whole table.
// Only the jobs of the batch's own agents are locked (or read): a message about another agent's job
// is answered `unknown`, and must not hold up that agent's own batches. (A job named by one agent
// of the batch and held by another is locked, which holds up nothing: its holder's messages are
// in this batch.) A filter on each row found; pairing each job with its sender cost PGlite more.
const LOCK = `
SELECT j.agent_id::text AS agent_id, j.seq, j.log_bytes::text AS log_bytes, ${SETTLING_COLUMNS}
FROM jobs j JOIN work_orders wo ON wo.id = j.work_order_id
WHERE j.id = ANY($1::bigint[]) AND wo.id = ANY(ARRAY(SELECT work_order_id FROM jobs WHERE id = ANY($1::bigint[])))
  AND j.agent_id = ANY($2::bigint[])
ORDER BY j.work_order_id, j.id
FOR UPDATE OF j, wo`;

const TARGET: Partial<Record<JobMessage["type"], JobState>> = { "job.starting": "starting", "job.started": "running" };

function refusal(job: LockedJob, msg: JobMessage): string | undefined {
  const to = msg.type === "job.finished" ? msg.outcome : TARGET[msg.type];
  if (to === undefined) return jobMachine.isTerminal(job.state) ? `job ${msg.jobId} has already ended (${job.state})` : undefined;
  return jobMachine.can(job.state, to) ? undefined : `job ${msg.jobId} is ${job.state}; ${msg.type} would make it ${to}`;
}

/**
 * An agent reports a job lost only to disown it: the job was listed as its own at its welcome, and
 * it holds no such job (it restarted). Numbered from the seq the welcome gave, it may meet messages
 * of the agent's previous run still on their way, which take that number first; it applies whatever
 * its number while the job has not ended, or the job would stay active under a connected agent.
 */
function disowns(job: LockedJob, msg: JobMessage): boolean {
  return msg.type === "job.finished" && msg.outcome === "lost" && !jobMachine.isTerminal(job.state);
}

/** The batch's view of the locked rows, kept current as its messages are decided. */
class Batch {
  readonly writes = new JobWrites();
  private readonly jobs: Map<string, LockedJob>;
  private readonly orderStates = new Map<string, WorkOrderState>();

  constructor(rows: LockedJob[]) {
    this.jobs = new Map(rows.map((row) => [row.job_id, row]));
    for (const row of rows) this.orderStates.set(row.work_order_id, row.order_state);
  }

  decide({ agentId, message: msg, holdSeconds }: Incoming): Applied {
    const locked = this.jobs.get(msg.jobId);
    if (!locked || locked.agent_id !== agentId) return { kind: "unknown" };
    const job = { ...locked, order_state: this.orderStates.get(locked.work_order_id)! };
    if (msg.seq <= job.seq && !disowns(job, msg)) return { kind: "duplicate", ended: jobMachine.isTerminal(job.state) };
    if (msg.seq > job.seq + 1) return { kind: "gap", expected: job.seq + 1 };
    locked.seq = Math.max(job.seq, msg.seq);
    const refused = refusal(job, msg);
    if (refused) {
      this.writes.job(msg.jobId, { seq: locked.seq });
      return { kind: "rejected", reason: refused, ended: jobMachine.isTerminal(job.state) };
    }
    this.apply(locked, job, msg, holdSeconds);
    return { kind: "applied", workOrderId: job.work_order_id };
  }

  private apply(locked: LockedJob, job: LockedJob, msg: JobMessage, holdSeconds = 0): void {
    const { jobId } = msg;
    const { seq } = locked;
    switch (msg.type) {
      case "job.log":
        locked.log_bytes = String(Number(locked.log_bytes) + this.writes.log(jobId, Number(locked.log_bytes), msg.data, seq));
        return;
      case "job.status":
        return this.writes.job(jobId, { seq, status: msg.status, external_id: msg.externalId, external_url: msg.externalUrl });
      case "job.starting":
        locked.state = "starting";
        return this.writes.job(jobId, { seq, state: "starting", started: true });
      case "job.started":
        locked.state = "running";
        this.writes.job(jobId, { seq, state: "running", started: true, external_id: msg.externalId, external_url: msg.externalUrl });
        if (job.latest && workOrderMachine.can(job.order_state, "running")) {
          this.writes.order(job.work_order_id, jobId, job.order_state, "running", null, null);
          this.orderStates.set(job.work_order_id, "running");
        }
        return;
      case "job.finished": {
        const { outcome, exitCode } = msg;
        const end = { outcome, exitCode, seq, error: msg.error ?? null, infrastructure: msg.infrastructure ?? false, holdSeconds };
        const settled = jobSettle(this.writes, job, end);
        locked.state = settled.job;
        this.orderStates.set(job.work_order_id, settled.order);
      }
    }
  }
}

/** Applies messages inside the caller's transaction, in order; one answer per message. */
export async function jobApplyIn(tx: Queryable, incoming: Incoming[]): Promise<Applied[]> {
  const ids = [...new Set(incoming.map((i) => i.message.jobId))];
  const agents = [...new Set(incoming.map((i) => i.agentId))];
  const batch = new Batch(await tx.query<LockedJob>(LOCK, [ids, agents]));
  const applied = incoming.map((item) => batch.decide(item));
  const requeued = new Map((await batch.writes.flush(tx)).map((order) => [order.id, order]));
  if (requeued.size === 0) return applied;
  return applied.map((answer, i) => {
    const msg = incoming[i]!.message;
    const order = answer.kind === "applied" && msg.type === "job.finished" ? requeued.get(answer.workOrderId) : undefined;
    return order ? { ...answer, requeued: order } : answer;
  });
}
