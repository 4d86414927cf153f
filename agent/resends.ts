// Job messages the coordinator took but could not apply (its database refused them: a full disk,
// a read-only database), or answered with a gap, are sent again later, each job's on a backoff of
// its own, until the coordinator takes them. Nothing else would send them again while the socket
// stays open, and a job whose last message was refused would stay running there for good.
import { Retry } from "./backoff.ts";
import type { Outbox } from "./outbox.ts";

/** The first step of a job's backoff: its first resend comes 0.5-1 s after the refusal. */
const BASE_MS = 1000;

/** `resent`: sent again, and not answered yet. */
type Job = { retry: Retry; resent: boolean };

export class Resends {
  private readonly jobs = new Map<string, Job>();
  private stopped = false;
  private urgently = false;

  constructor(private readonly outbox: Pick<Outbox, "has" | "resend">) {}

  /** The coordinator could not apply a message of the job: its unacknowledged messages go again after the job's next delay. */
  later(jobId: string): void {
    if (this.stopped) return;
    let job = this.jobs.get(jobId);
    if (!job) this.jobs.set(jobId, (job = this.job(jobId)));
    if (this.urgently) job.retry.urgent();
    job.resent = false;
    if (!job.retry.pending) job.retry.schedule();
  }

  /** From now on resends within `URGENT_MS`, those pending too (a drain, before its deadline). */
  urgent(): void {
    this.urgently = true;
    for (const job of this.jobs.values()) job.retry.urgent();
  }

  private job(jobId: string): Job {
    const job: Job = {
      retry: new Retry(() => {
        if (!this.outbox.has(jobId)) return void this.jobs.delete(jobId);
        job.resent = this.outbox.resend(jobId) > 0;
      }, BASE_MS),
      resent: false,
    };
    return job;
  }

  /**
   * Whether the job's messages are to go again, or went again and are not answered yet: a gap the
   * coordinator reports meanwhile (a message sent after the refused one) needs no resend of its own.
   */
  waiting(jobId: string): boolean {
    const job = this.jobs.get(jobId);
    return job !== undefined && (job.retry.pending || job.resent);
  }

  /** The coordinator took a message of the job, or gave the job up: a later refusal waits the shortest delay again. */
  answered(jobId: string): void {
    const job = this.jobs.get(jobId);
    if (!job) return;
    job.resent = false;
    if (this.outbox.has(jobId)) return job.retry.backoff.reset();
    job.retry.cancel();
    this.jobs.delete(jobId);
  }

  /** Forgets every job's delay: a welcome sends everything again anyway. */
  reset(): void {
    for (const job of this.jobs.values()) job.retry.cancel();
    this.jobs.clear();
  }

  stop(): void {
    this.stopped = true;
    this.reset();
  }
}
