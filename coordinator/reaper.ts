// A loop that keeps the pool honest when nobody reports: it declares the jobs of agents gone past
// their lease lost, ends work orders that waited past their queue timeout, ends jobs far past
// their run timeout, and wakes the agents waiting for retries whose backoff is over.
import type { Bus } from "./bus.ts";
import type { Database } from "./db/database.ts";
import { databaseNow, dueRetries, type Reaped, reapLost, reapOverdue, reapQueueTimeouts } from "./sql/reap.ts";

export type ReaperOptions = { intervalMs: number; leaseSeconds: number; onError(error: unknown): void };

export class Reaper {
  private timer?: NodeJS.Timeout;
  private since?: string;
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

  private async tick(): Promise<void> {
    const now = await databaseNow(this.db);
    const lost = await reapLost(this.db);
    const overdue = await reapOverdue(this.db, this.options.leaseSeconds);
    const requeued = [...lost.requeued, ...overdue.requeued];
    if (requeued.length > 0) this.bus.emit("enqueued", requeued);
    for (const job of overdue.reaped) this.bus.emit("cancel", { jobId: job.jobId, agentId: job.agentId, reason: "run timeout" });
    const timedOut = await reapQueueTimeouts(this.db);
    for (const id of [...[...lost.reaped, ...overdue.reaped].map((r: Reaped) => r.workOrderId), ...timedOut]) this.bus.emit("changed", id);
    const due = await dueRetries(this.db, this.since ?? now, now);
    if (due.length > 0) this.bus.emit("enqueued", due);
    this.since = now;
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
