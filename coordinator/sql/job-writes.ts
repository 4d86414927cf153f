// Changes to jobs, their logs, their work orders and the work orders' event trail, gathered in
// memory while a batch of job messages (or reaped jobs) is decided, then written in one statement:
// a batch costs the same round trip whether it holds one message or five hundred. The updates
// find their rows by key (`= ANY(ARRAY(...))`): the planner cannot see how few rows the input
// holds, and hash-joined a jsonb recordset against a scan of the whole table.
import type { JobState, WorkOrderState } from "../../protocol/states.ts";
import type { Enqueued } from "../bus.ts";
import type { Queryable } from "../db/database.ts";
// What a job prints or an agent says is kept as well as it can be, never refused: a refusal would fail the whole batch.
import { storable } from "../db/storable.ts";
import { arrayLiteral, type Quoted } from "./array-literal.ts";
import { ENQUEUED_COLUMNS } from "./views.ts";

type JobChange = {
  id: string;
  seq: number | null;
  state: JobState | null;
  status: string | null;
  external_id: string | null;
  external_url: string | null;
  log_added: number;
  started: boolean;
  finished: boolean;
  exit_code: number | null;
  error: string | null;
  infrastructure: boolean;
};

/** `refund`: the attempt the job was claimed as is not counted (it never began). */
type OrderChange = { id: string; state: WorkOrderState; delay: number | null; refund: boolean };

type Event = { work_order_id: string; job_id: string; from_state: WorkOrderState; to_state: WorkOrderState; reason: string | null };

export type JobFields = Partial<Omit<JobChange, "id" | "log_added">>;

// Each kind of row travels as a parameter array per column (see array-literal.ts), in the order of
// `columns()` below.
const WRITE = `
WITH job_input AS (
  SELECT * FROM unnest($4::bigint[], $5::int[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[],
    $11::boolean[], $12::boolean[], $13::int[], $14::text[], $15::boolean[])
    AS x(id, seq, state, status, external_id, external_url, log_added, started, finished, exit_code, error, infrastructure)
), order_input AS (
  SELECT * FROM unnest($16::bigint[], $17::text[], $18::float8[], $19::boolean[]) AS x(id, state, delay, refund)
), logs AS (
  INSERT INTO job_logs (job_id, "offset", data) SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])
), jobs_changed AS (
  UPDATE jobs j SET
    seq = coalesce(x.seq, j.seq),
    state = coalesce(x.state::job_state, j.state),
    status = coalesce(x.status, j.status),
    external_id = coalesce(x.external_id, j.external_id),
    external_url = coalesce(x.external_url, j.external_url),
    log_bytes = j.log_bytes + x.log_added,
    started_at = CASE WHEN x.started THEN now() ELSE j.started_at END,
    finished_at = CASE WHEN x.finished THEN now() ELSE j.finished_at END,
    exit_code = CASE WHEN x.finished THEN x.exit_code ELSE j.exit_code END,
    error = CASE WHEN x.finished THEN x.error ELSE j.error END,
    infrastructure = CASE WHEN x.finished THEN x.infrastructure ELSE j.infrastructure END
  FROM job_input x
  WHERE j.id = ANY(ARRAY(SELECT id FROM job_input)) AND j.id = x.id
), orders_changed AS (
  UPDATE work_orders w SET state = x.state::work_order_state, updated_at = now(),
    attempts = CASE WHEN x.refund THEN w.attempts - 1 ELSE w.attempts END,
    run_after = CASE WHEN x.delay IS NULL THEN w.run_after ELSE now() + make_interval(secs => x.delay) END
  FROM order_input x
  WHERE w.id = ANY(ARRAY(SELECT id FROM order_input)) AND w.id = x.id
)
INSERT INTO work_order_events (work_order_id, job_id, from_state, to_state, reason)
SELECT x.work_order_id, x.job_id, x.from_state::work_order_state, x.to_state::work_order_state, x.reason
FROM unnest($20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::text[]) WITH ORDINALITY
  AS x(work_order_id, job_id, from_state, to_state, reason, ord)
ORDER BY x.ord`;

const REQUEUED = `
SELECT ${ENQUEUED_COLUMNS} FROM work_orders
WHERE id = ANY($1::bigint[]) AND state = 'pending'`;


export class JobWrites {
  private readonly logs: { job_id: string; offset: string; data: string }[] = [];
  private readonly jobs = new Map<string, JobChange>();
  private readonly orders = new Map<string, OrderChange>();
  private readonly events: Event[] = [];

  /** Sets the job's fields; fields left out keep their value (a later call wins). */
  job(id: string, fields: JobFields): void {
    const change = this.changeOf(id);
    for (const [key, value] of Object.entries(fields)) if (value !== undefined) (change as Record<string, unknown>)[key] = value;
  }

  /** Appends a log chunk at `offset`; returns its length in bytes as stored. */
  log(jobId: string, offset: number, data: string, seq: number): number {
    const text = storable(data);
    const bytes = Buffer.byteLength(text, "utf8");
    this.logs.push({ job_id: jobId, offset: String(offset), data: text });
    const change = this.changeOf(jobId);
    change.log_added += bytes;
    change.seq = seq;
    return bytes;
  }

  /**
   * Moves the work order and records the move; `delay` (seconds) sets when it may be claimed next,
   * and `refund` takes back the attempt its job was claimed as.
   */
  order(id: string, jobId: string, from: WorkOrderState, to: WorkOrderState, reason: string | null, delay: number | null, refund = false): void {
    const previous = this.orders.get(id);
    this.orders.set(id, { id, state: to, delay: delay ?? previous?.delay ?? null, refund });
    this.events.push({ work_order_id: id, job_id: jobId, from_state: from, to_state: to, reason });
  }

  /** Writes everything; returns the work orders put back in the queue at once, for a wake-up. */
  async flush(tx: Queryable): Promise<Enqueued[]> {
    if (this.jobs.size === 0 && this.orders.size === 0) return [];
    await tx.query(WRITE, this.columns());
    // Claimable at once, so woken now: the reaper's look for retries whose backoff ran out is for later ones.
    const requeued = [...this.orders.values()].filter((o) => o.state === "pending" && (o.refund || o.delay === 0)).map((o) => o.id);
    return requeued.length === 0 ? [] : tx.query<Enqueued>(REQUEUED, [requeued]);
  }

  /** The parameters of `WRITE`: what agents said (status, ids, urls, errors) made storable. */
  private columns(): string[] {
    // States repeat across a batch.
    const quoted: Quoted = new Map();
    const jobs = [...this.jobs.values()];
    const orders = [...this.orders.values()];
    const text = (value: string | null) => (value === null ? null : storable(value));
    const column = <T>(rows: T[], value: (row: T) => unknown, memo?: Quoted) => arrayLiteral(rows.map(value), memo);
    return [
      column(this.logs, (l) => l.job_id),
      column(this.logs, (l) => l.offset),
      column(this.logs, (l) => l.data),
      column(jobs, (j) => j.id),
      column(jobs, (j) => j.seq),
      column(jobs, (j) => j.state, quoted),
      column(jobs, (j) => text(j.status)),
      column(jobs, (j) => text(j.external_id)),
      column(jobs, (j) => text(j.external_url)),
      column(jobs, (j) => j.log_added),
      column(jobs, (j) => j.started),
      column(jobs, (j) => j.finished),
      column(jobs, (j) => j.exit_code),
      column(jobs, (j) => text(j.error)),
      column(jobs, (j) => j.infrastructure),
      column(orders, (o) => o.id),
      column(orders, (o) => o.state, quoted),
      column(orders, (o) => o.delay),
      column(orders, (o) => o.refund),
      column(this.events, (e) => e.work_order_id),
      column(this.events, (e) => e.job_id),
      column(this.events, (e) => e.from_state, quoted),
      column(this.events, (e) => e.to_state, quoted),
      column(this.events, (e) => text(e.reason)),
    ];
  }

  private changeOf(id: string): JobChange {
    let change = this.jobs.get(id);
    if (!change) {
      change = {
        id,
        seq: null,
        state: null,
        status: null,
        external_id: null,
        external_url: null,
        log_added: 0,
        started: false,
        finished: false,
        exit_code: null,
        error: null,
        infrastructure: false,
      };
      this.jobs.set(id, change);
    }
    return change;
  }
}
