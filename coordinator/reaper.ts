// A loop that keeps the pool honest when nobody reports: it declares the jobs of agents gone past
// their lease lost, ends work orders that waited past their queue timeout, ends jobs far past
// their run timeout, and wakes the agents waiting for retries whose backoff is over. A loop of its
// own deletes what outlived the retention, now and then: a pass may take seconds over large logs,
// which must not hold up the first loop's.
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

type Loop = { timer?: NodeJS.Timeout; running?: Promise<void> };

export class Reaper {
  private readonly loops: Loop[] = [];
  private since?: string;
  private purgeDelayMs: number;
  private stopped = false;

  constructor(
    private readonly db: Database,
    private readonly bus: Bus,
    private readonly options: ReaperOptions,
  ) {
    this.purgeDelayMs = options.intervalMs;
  }

  start(): void {
    this.repeat(() => this.tick(), () => this.options.intervalMs);
    if (this.options.retainDays > 0) this.repeat(() => this.purge(), () => this.purgeDelayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const loop of this.loops) clearTimeout(loop.timer);
    await Promise.all(this.loops.map((loop) => loop.running));
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
  }

  /** One pass of the retention; while it stops at its quota, the next follows as soon as a tick would. */
  private async purge(): Promise<void> {
    const { retainDays, intervalMs, purgeEveryMs = 60_000 } = this.options;
    this.purgeDelayMs = purgeEveryMs;
    const { more } = await purgeExpired(this.db, retainDays);
    if (more) this.purgeDelayMs = intervalMs;
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

  /** Runs `work` over and over, `delayMs()` apart, until the reaper stops. */
  private repeat(work: () => Promise<void>, delayMs: () => number): void {
    const loop: Loop = {};
    this.loops.push(loop);
    const next = () => {
      if (this.stopped) return;
      loop.timer = setTimeout(() => {
        loop.running = work()
          .catch((error) => this.options.onError(error))
          .finally(next);
      }, delayMs());
    };
    next();
  }
}
