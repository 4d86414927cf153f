// Job messages the coordinator took but could not apply (its database refused them: a full disk,
// a read-only database) are sent again later, each job's on a backoff of its own, until the
// coordinator takes them. Nothing else would send them again while the socket stays open, and a
// job whose last message was refused would stay running there for good.
import { Backoff } from "./backoff.ts";
import type { Outbox } from "./outbox.ts";

type Job = { backoff: Backoff; timer?: NodeJS.Timeout };

export class Resends {
  private readonly jobs = new Map<string, Job>();

  constructor(
    private readonly outbox: Pick<Outbox, "has" | "resend">,
    private readonly baseMs = 1000,
  ) {}

  /** The coordinator could not apply a message of the job: its unacknowledged messages go again after the job's next delay. */
  later(jobId: string): void {
    let job = this.jobs.get(jobId);
    if (!job) this.jobs.set(jobId, (job = { backoff: new Backoff(this.baseMs) }));
    if (job.timer) return;
    job.timer = setTimeout(() => {
      job.timer = undefined;
      if (this.outbox.has(jobId)) this.outbox.resend(jobId);
      else this.jobs.delete(jobId);
    }, job.backoff.next());
  }

  /** Whether the job's messages wait to go again: until then, a gap the coordinator reports needs no resend of its own. */
  waiting(jobId: string): boolean {
    return this.jobs.get(jobId)?.timer !== undefined;
  }

  /** The coordinator applied a message of the job: a later refusal waits the shortest delay again. */
  acknowledged(jobId: string): void {
    const job = this.jobs.get(jobId);
    if (!job) return;
    if (this.outbox.has(jobId)) return job.backoff.reset();
    clearTimeout(job.timer);
    this.jobs.delete(jobId);
  }

  stop(): void {
    for (const job of this.jobs.values()) clearTimeout(job.timer);
    this.jobs.clear();
  }
}
