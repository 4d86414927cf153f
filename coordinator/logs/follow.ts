// Reads a log from an offset to its current end and, when following, on until the job ends. Woken
// by the bus whenever the work order changes; reads the state before the chunks, so when it sees a
// job ended it also sees every chunk the agent sent before saying so. A work order's log moves to
// its next job only after the rest of the one before, which has ended by then. Retention deletes a
// ended work order with its log in one transaction, perhaps between two pages of a read: a read
// of an ended work order looks for it again at the end, and throws `LogGone` if it went.
import type { LogCursor, LogEvent } from "../../protocol/api.ts";
import { type JobState, jobMachine, type WorkOrderState, workOrderMachine } from "../../protocol/states.ts";
import type { Bus } from "../bus.ts";
import type { Queryable } from "../db/database.ts";
import { logRead } from "../sql/log-read.ts";

export type FollowTarget =
  /** One job's log. */
  | { workOrderId: string; jobId: string }
  /** The log of whichever job of the work order is the latest, across retries. */
  | { workOrderId: string; jobId?: undefined };

type Snapshot = {
  orderState: WorkOrderState;
  jobState: JobState | null;
  jobId: string | null;
  attempt: number | null;
  exitCode: number | null;
  error: string | null;
};

// A work order's latest job handed back unbegun has no log, and is not its log's job: the offset
// asked for is into the attempt that runs.
const SNAPSHOT = `
SELECT wo.state AS "orderState", j.state AS "jobState", j.id::text AS "jobId", j.attempt, j.exit_code AS "exitCode", j.error
FROM work_orders wo LEFT JOIN jobs j ON j.id = coalesce($2::bigint, wo.latest_job_id) AND ($2::bigint IS NOT NULL OR j.state <> 'returned')
WHERE wo.id = $1`;

/** The work order went, with its log (retention deleted it), while the log was read: what was read may not be the whole. */
export class LogGone extends Error {
  constructor(workOrderId: string) {
    super(`work order ${workOrderId} was deleted (its retention ran out) while its log was read`);
  }
}

const EXISTS = `SELECT 1 FROM work_orders WHERE id = $1`;

/** How long a follower waits for a wake-up before it looks anyway: one lost between replicas costs no more. */
const RECHECK_MS = 15_000;

class Wake {
  private pending = false;
  private resolve?: () => void;
  readonly stop: () => void;

  constructor(
    bus: Bus,
    workOrderId: string,
    signal: AbortSignal,
    private readonly recheckMs: number,
  ) {
    const unsubscribe = bus.watch(workOrderId, () => this.fire());
    const onAbort = () => this.fire();
    signal.addEventListener("abort", onAbort, { once: true });
    this.stop = () => {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
    };
  }

  private fire(): void {
    this.pending = true;
    this.resolve?.();
  }

  reset(): void {
    this.pending = false;
  }

  async wait(): Promise<void> {
    if (this.pending) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.resolve = resolve;
      timer = setTimeout(resolve, this.recheckMs);
    });
    clearTimeout(timer);
  }
}

/** Where the log goes on after a slice of it: offsets count bytes of UTF-8. */
export const endOf = (slice: { offset: number; data: string }) => slice.offset + Buffer.byteLength(slice.data);

async function* drain(db: Queryable, jobId: string, from: number): AsyncGenerator<LogEvent & { type: "log" }> {
  let offset = from;
  for (;;) {
    const slices = await logRead(db, jobId, offset);
    for (const slice of slices) {
      yield { type: "log", jobId, ...slice };
      offset = endOf(slice);
    }
    if (slices.length === 0) return;
  }
}

/** The attempt after `jobId` of a work order (one returned unbegun has no log, and is passed by). */
const NEXT_JOB = `
SELECT id::text AS id, attempt FROM jobs
WHERE work_order_id = $1 AND id > $2 AND state <> 'returned'
ORDER BY id LIMIT 1`;

export async function* followLog(
  db: Queryable,
  bus: Bus,
  target: FollowTarget,
  /** `offset`: into the first job's log; `resume`: carry on after an event a follower received. */
  options: { offset: number; resume?: LogCursor; follow: boolean; signal: AbortSignal; recheckMs?: number },
): AsyncGenerator<LogEvent> {
  const wake = new Wake(bus, target.workOrderId, options.signal, options.recheckMs ?? RECHECK_MS);
  let jobId = options.resume?.jobId ?? null;
  let offset = options.resume?.offset ?? options.offset;
  try {
    while (!options.signal.aborted) {
      wake.reset();
      const [now] = await db.query<Snapshot>(SNAPSHOT, [target.workOrderId, target.jobId ?? null]);
      if (!now) throw new LogGone(target.workOrderId);
      if (now.jobId !== null && now.jobId !== jobId) {
        // A follower that was behind (woken late, or resuming) reads every attempt in turn.
        let next = { id: now.jobId, attempt: now.attempt! };
        if (jobId !== null) {
          yield* drain(db, jobId, offset);
          offset = 0;
          [next = next] = await db.query<{ id: string; attempt: number }>(NEXT_JOB, [target.workOrderId, jobId]);
        }
        jobId = next.id;
        yield { type: "job", jobId, attempt: next.attempt, offset };
      }
      if (jobId !== null) {
        for await (const event of drain(db, jobId, offset)) {
          offset = endOf(event);
          yield event;
        }
        if (now.jobId !== null && jobId !== now.jobId) continue;
      }
      // The latest job was returned unbegun, which the snapshot passes by: attempts after the one
      // read may still have run, and are read before the end.
      if (jobId !== null && now.jobId === null && target.jobId === undefined) {
        const [later] = await db.query<{ id: string; attempt: number }>(NEXT_JOB, [target.workOrderId, jobId]);
        if (later) {
          jobId = later.id;
          offset = 0;
          yield { type: "job", jobId, attempt: later.attempt, offset };
          continue;
        }
      }
      const ended = target.jobId ? now.jobState !== null && jobMachine.isTerminal(now.jobState) : workOrderMachine.isTerminal(now.orderState);
      if (ended) {
        // Only an ended work order is deleted, and only long after: one not ended when the snapshot
        // was read still has its log.
        const [still] = await db.query(EXISTS, [target.workOrderId]);
        if (!still) throw new LogGone(target.workOrderId);
        yield { type: "end", state: target.jobId ? now.jobState! : now.orderState, exitCode: now.exitCode, ...(now.error !== null && { error: now.error }) };
        return;
      }
      if (!options.follow) return;
      await wake.wait();
    }
  } finally {
    wake.stop();
  }
}
