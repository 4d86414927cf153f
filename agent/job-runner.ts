// Runs one assigned job through its adapter and reports it: starting, started, log chunks,
// finished. A job waits, held, until `begin`; one stopped before that never began, and one handed
// back then is `returned`. A cancel (or the run timeout) stops the run through the adapter; the
// outcome says which it was. The timeout counts the adapter's start too, and a stop that comes
// while it starts ends the job after the grace, its run stopped if it ever starts.
import { AdapterError, type Run, type RunResult } from "../adapters/adapter.ts";
import type { Adapter } from "../adapters/adapter.ts";
import type { AdapterName } from "../protocol/adapter-specs.ts";
import { describeIssues } from "../protocol/issues.ts";
import type { Assignment } from "../protocol/messages.ts";
import type { Outcome } from "../protocol/states.ts";
import { fitted } from "./fit.ts";
import { LogBatcher } from "./log-batcher.ts";
import type { JobMessageBody } from "./outbox.ts";

export type AdapterLookup = (name: AdapterName) => Adapter<unknown>;

export type Ending = { outcome: Outcome; exitCode: number | null; error?: string; infrastructure: boolean };

export type JobRunnerOptions = {
  cancelGraceMs: number;
  /** The grace at the run timeout (default: the cancel grace). */
  timeoutGraceMs?: number;
  /** Bytes of output the job's log may take (default: no limit). */
  maxLogBytes?: number;
  warn(message: string, fields: Record<string, unknown>): void;
};

export class JobRunner {
  readonly done: Promise<Ending>;
  private went = false;
  private release!: () => void;
  private readonly released = new Promise<void>((resolve) => (this.release = resolve));
  private run?: Run;
  private ended = false;
  private stopReason?: "cancelled" | "timed_out" | "handed_back";
  /** When a stop's grace runs out (`performance.now()`): a run that starts after the stop gets only what is left. */
  private stopDeadline = Infinity;
  private giveUp!: () => void;
  /** Resolves a grace after a stop that came while the adapter was still starting the run. */
  private readonly gaveUp = new Promise<void>((resolve) => (this.giveUp = resolve));

  private readonly report: (body: JobMessageBody) => void;

  private readonly cancelGraceMs: number;
  /** The grace at the run timeout: the coordinator ends a job that long past its timeout and may retry it. */
  private readonly timeoutGraceMs: number;
  private readonly warn: JobRunnerOptions["warn"];
  private readonly maxLogBytes?: number;

  constructor(
    readonly job: Assignment,
    report: (body: JobMessageBody) => void,
    private readonly adapterFor: AdapterLookup,
    { cancelGraceMs, timeoutGraceMs = cancelGraceMs, maxLogBytes, warn }: JobRunnerOptions,
  ) {
    // An adapter that reports after its run ended (it should not) is ignored, not fatal.
    this.report = (body) => this.ended || report(fitted(body));
    this.cancelGraceMs = cancelGraceMs;
    this.timeoutGraceMs = timeoutGraceMs;
    this.warn = warn;
    this.maxLogBytes = maxLogBytes;
    this.done = this.execute();
  }

  /** Whether `begin` let it go ahead: the job is, or was, taking a slot. */
  get begun(): boolean {
    return this.went;
  }

  /** Lets the held job go ahead, unless it was already stopped; says whether it went. */
  begin(): boolean {
    if (this.stopReason) return false;
    this.went = true;
    this.release();
    return true;
  }

  /** Stops the run; it ends `cancelled` unless it ended on its own first. */
  cancel(): void {
    this.stop("cancelled");
  }

  /**
   * Stops the run because the agent cannot keep it (shutting down, or out of touch): it ends as an
   * infrastructure failure, which the work order's policy retries elsewhere by default, or as
   * `returned` if it had not begun. `graceMs` shortens the cancel grace where the run must be gone
   * by a deadline.
   */
  handBack(graceMs = this.cancelGraceMs): void {
    this.stop("handed_back", Math.min(graceMs, this.cancelGraceMs));
  }

  private stop(reason: "cancelled" | "timed_out" | "handed_back", graceMs = this.cancelGraceMs): void {
    const deadline = performance.now() + graceMs;
    if (this.stopReason) {
      // Stopped already: a later stop whose deadline comes sooner (a fence after a drain) still holds.
      if (deadline < this.stopDeadline) {
        this.stopDeadline = deadline;
        if (!this.run) this.giveUpAfter(graceMs);
        else if (!this.detaches(this.run)) this.halt(this.run, graceMs);
      }
      return;
    }
    this.stopReason = reason;
    this.stopDeadline = deadline;
    this.release();
    if (this.run) this.halt(this.run, graceMs);
    else this.giveUpAfter(graceMs);
  }

  private giveUpAfter(ms: number): void {
    setTimeout(this.giveUp, ms).unref();
  }

  /**
   * Stops the run within what is left of the stop's grace, so that one that starts late does not
   * outlive the deadline the stop set; one handed back that can live on without us is only let go,
   * for the next attempt to adopt. An adapter that cannot (its system refused) is warned of, not
   * fatal to the agent: the run's result still ends the job.
   */
  private halt(run: Run, graceMs = Math.max(0, Math.ceil(this.stopDeadline - performance.now()))): void {
    const stopping = attempted(() => (this.detaches(run) ? run.detach!() : run.cancel(graceMs)));
    stopping.catch((error) => this.warn("the adapter could not stop the run", { job: this.job.jobId, error: String(error) }));
  }

  private detaches(run: Run): boolean {
    return this.stopReason === "handed_back" && run.detach !== undefined;
  }

  private async execute(): Promise<Ending> {
    const { jobId } = this.job;
    const logs = new LogBatcher((data) => this.report({ type: "job.log", jobId, data }), { limitBytes: this.maxLogBytes });
    const ending = await this.attempt(logs).catch(
      (error): Ending => ({ outcome: "failed", exitCode: null, error: infrastructureError(error), infrastructure: true }),
    );
    logs.flush();
    this.report({ type: "job.finished", jobId, ...ending });
    this.ended = true;
    return ending;
  }

  private async attempt(logs: LogBatcher): Promise<Ending> {
    await this.released;
    if (!this.begun) return this.stopped(null);
    const { jobId, workOrderId, attempt, timeoutSeconds } = this.job;
    const adapter = this.adapterFor(this.job.adapter);
    const spec = adapter.spec.safeParse(this.job.spec);
    if (!spec.success) {
      return { outcome: "failed", exitCode: null, error: `invalid spec: ${describeIssues(spec.error).message}`, infrastructure: false };
    }
    if (this.stopReason) return this.stopped(null);
    this.report({ type: "job.starting", jobId });
    const ctx = {
      jobId,
      workOrderId,
      attempt,
      spec: spec.data,
      log: (text: string) => logs.append(text),
      status: (status: string) => this.report({ type: "job.status", jobId, status }),
    };
    const { adopt } = this.job;
    // Armed before the adapter is called: the timeout counts a start that is slow or never returns.
    const timer = timeoutSeconds === null ? undefined : setTimeout(() => this.stop("timed_out", this.timeoutGraceMs), timeoutSeconds * 1000);
    try {
      const starting = adopt && adapter.adopt ? adapter.adopt(ctx, adopt) : adapter.start(ctx);
      const run = await Promise.race([starting, this.gaveUp]);
      if (!run) {
        // Stopped, and still starting after the grace: the job ends now, and its run is stopped if it ever starts.
        void starting.then((late) => this.halt(late), () => {});
        return this.stopped(null);
      }
      this.run = run;
      this.report({ type: "job.started", jobId, externalId: run.externalId, externalUrl: run.externalUrl });
      if (this.stopReason) this.halt(run);
      return this.ending(await run.result);
    } finally {
      clearTimeout(timer);
    }
  }

  private ending(result: RunResult): Ending {
    const { exitCode, error } = result;
    if (result.outcome === "cancelled" && this.stopReason) return this.stopped(exitCode);
    return { outcome: result.outcome, exitCode, infrastructure: false, ...(error ? { error } : {}) };
  }

  private stopped(exitCode: number | null): Ending {
    if (this.stopReason === "handed_back" && !this.begun) return { outcome: "returned", exitCode, infrastructure: false };
    if (this.stopReason === "handed_back") {
      return { outcome: "failed", exitCode, infrastructure: true, error: "the agent stopped the job: it shut down or lost touch" };
    }
    return { outcome: this.stopReason ?? "cancelled", exitCode, infrastructure: false };
  }
}

/** What `call` returns, or its throw as a rejection. */
function attempted(call: () => Promise<void>): Promise<void> {
  try {
    return call();
  } catch (error) {
    return Promise.reject(error);
  }
}

function infrastructureError(error: unknown): string {
  if (error instanceof AdapterError) return error.message;
  return `the agent could not run the job: ${error instanceof Error ? error.message : String(error)}`;
}
