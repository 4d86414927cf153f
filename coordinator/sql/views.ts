// Rows as the SQL returns them, and their mapping to the API's views.
import type { JobView, WorkOrderView } from "../../protocol/api.ts";
import type { RetryableEnding } from "../../protocol/retry.ts";
import type { Labels, Selector } from "../../protocol/selector.ts";
import type { JobState, WorkOrderState } from "../../protocol/states.ts";

export type WorkOrderRow = {
  id: string;
  state: WorkOrderState;
  adapter: string;
  spec: unknown;
  selector: Selector;
  selector_text: string;
  target_agent: string | null;
  labels: Labels;
  priority: number;
  timeout_seconds: number | null;
  max_attempts: number;
  attempts: number;
  retry_on: RetryableEnding[];
  retry_backoff_seconds: number;
  queue_timeout_seconds: number | null;
  run_after: Date | string;
  idempotency_key: string | null;
  metadata: Record<string, unknown>;
  created_at: Date | string;
  updated_at: Date | string;
  latest_job: JobJson | null;
};

/** A job as `JOB_JSON` builds it: the view, with timestamps still in Postgres' text form. */
type JobJson = Omit<JobView, "createdAt" | "startedAt" | "finishedAt"> & {
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
};

/** One job (alias `j`) as a jsonb object in the shape of JobView. */
export const JOB_JSON = `jsonb_build_object(
  'id', j.id::text, 'workOrderId', j.work_order_id::text, 'attempt', j.attempt, 'agent', j.agent_name,
  'state', j.state, 'exitCode', j.exit_code, 'error', j.error, 'infrastructure', j.infrastructure, 'status', j.status,
  'externalId', j.external_id, 'externalUrl', j.external_url, 'logBytes', j.log_bytes,
  'createdAt', j.created_at, 'startedAt', j.started_at, 'finishedAt', j.finished_at)`;

/** A work order's columns that a wake-up needs, for `Enqueued`. */
export const ENQUEUED_COLUMNS = `id::text AS id, selector, target_agent AS "targetAgent"`;

/** Work order columns (alias `wo`) with its latest job from `jobs` (a table, or the rows a statement inserts), for `WorkOrderRow`. */
export const workOrderColumns = (jobs = "jobs") => `wo.id, wo.state, wo.adapter, wo.spec, wo.selector, wo.selector_text,
  wo.target_agent, wo.labels, wo.priority, wo.timeout_seconds, wo.max_attempts, wo.attempts,
  wo.retry_on, wo.retry_backoff_seconds, wo.queue_timeout_seconds, wo.run_after, wo.idempotency_key, wo.metadata, wo.created_at, wo.updated_at,
  (SELECT ${JOB_JSON} FROM ${jobs} j WHERE j.id = wo.latest_job_id) AS latest_job`;

export const WORK_ORDER_COLUMNS = workOrderColumns();

/** drizzle makes the shared postgres-js client return timestamps as text; PGlite returns Dates. */
export const iso = (at: string | Date) => new Date(at).toISOString();
const isoOrNull = (at: string | null) => (at === null ? null : iso(at));

export function jobView(job: JobJson): JobView {
  return {
    ...job,
    state: job.state as JobState,
    logBytes: Number(job.logBytes),
    createdAt: iso(job.createdAt),
    startedAt: isoOrNull(job.startedAt),
    finishedAt: isoOrNull(job.finishedAt),
  };
}

export function workOrderView(row: WorkOrderRow): WorkOrderView {
  return {
    id: row.id,
    state: row.state,
    adapter: row.adapter,
    spec: row.spec,
    selector: row.selector_text,
    agent: row.target_agent,
    labels: row.labels,
    priority: row.priority,
    timeoutSeconds: row.timeout_seconds,
    maxAttempts: row.max_attempts,
    attempts: row.attempts,
    retryOn: row.retry_on,
    retryBackoffSeconds: row.retry_backoff_seconds,
    queueTimeoutSeconds: row.queue_timeout_seconds,
    runAfter: iso(row.run_after),
    idempotencyKey: row.idempotency_key,
    metadata: row.metadata,
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
    latestJob: row.latest_job && jobView(row.latest_job),
  };
}
