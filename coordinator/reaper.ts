// A loop that keeps the pool honest when nobody reports: it declares the jobs of agents gone past
// their lease lost, ends work orders that waited past their queue timeout, ends jobs far past
// their run timeout, and wakes the agents waiting for retries whose backoff is over. Now and then
// it also deletes what outlived the retention.
import type { Bus } from "./bus.ts";
import type { Database } from "./db/database.ts";
import { databaseNow, dueRetries, type Reaping, reapLost, reapOverdue, reapQueueTimeouts } from "./sql/reap.ts";
import { purgeExpired } from "./sql/retention.ts";

export type ReaperOptions = {
  intervalMs: number;
  leaseSeconds: number;
  /** Ended work orders, and agents unseen, are deleted after this many days; 0 keeps them. */
  retainDays: number;
  /** How often retention looks for rows to delete while it finds none left over (default a minute). */
  purgeEveryMs?: number;
  onError(error: unknown): void;
};

export class Reaper {
  private timer?: NodeJS.Timeout;
  private since?: string;
  private purgeDue = 0;
  private running?: Promise<void>;
  private stopped = false;

  constructor(
    private readonly db: Database,
    private readonly bus: Bus,
    private readonly options: ReaperOptions,
  ) {}

  start(): void {
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Each pass tells of what it committed at once, and a pass that fails does not hold back the others. */
  private async tick(): Promise<void> {
    const now = await databaseNow(this.db);
    await this.pass(async () => this.tell(await reapLost(this.db)));
    await this.pass(async () => {
      const overdue = await reapOverdue(this.db, this.options.leaseSeconds);
      for (const job of overdue.reaped) this.bus.emit("cancel", { jobId: job.jobId, agentId: job.agentId, reason: "run timeout" });
      this.tell(overdue);
    });
    await this.pass(async () => {
      for (const id of await reapQueueTimeouts(this.db)) this.bus.emit("changed", id);
    });
    await this.pass(async () => {
      const due = await dueRetries(this.db, this.since ?? now, now);
      if (due.length > 0) this.bus.emit("enqueued", due);
      this.since = now;
    });
    await this.pass(() => this.purge());
  }

  private async purge(): Promise<void> {
    const { retainDays, purgeEveryMs = 60_000 } = this.options;
    if (retainDays === 0 || Date.now() < this.purgeDue) return;
    this.purgeDue = Date.now() + purgeEveryMs;
    const { more } = await purgeExpired(this.db, retainDays);
    if (more) this.purgeDue = 0;
  }

  /** Wakes agents for the work orders a reaping put back in the queue, and followers of every one it changed. */
  private tell({ reaped, requeued }: Reaping): void {
    if (requeued.length > 0) this.bus.emit("enqueued", requeued);
    for (const { workOrderId } of reaped) this.bus.emit("changed", workOrderId);
  }

  private async pass(work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (error) {
      this.options.onError(error);
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick()
        .catch((error) => this.options.onError(error))
        .finally(() => this.schedule());
    }, this.options.intervalMs);
  }
}
