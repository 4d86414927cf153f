// Keeps the planner's picture of the work-order pool current. CI fanning out thousands of work
// orders changes the pending set in a second; autovacuum looks once a minute, and until then the
// planner, expecting a handful of pending rows, has each claim fetch and sort the whole backlog
// instead of walking the pending index for the few rows it takes.
import type { Bus } from "./bus.ts";
import type { Queryable } from "./db/database.ts";

export type StatisticsOptions = { threshold: number; minIntervalMs: number };

export class Statistics {
  private added = 0;
  private last = -Infinity;
  private running?: Promise<void>;
  private later?: NodeJS.Timeout;
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: Queryable,
    bus: Bus,
    private readonly onError: (error: unknown) => void,
    private readonly options: StatisticsOptions = { threshold: 1000, minIntervalMs: 10_000 },
  ) {
    this.unsubscribe = bus.on("enqueued", (orders) => {
      this.added += orders.length;
      this.consider();
    });
  }

  /** Analyzes once enough rows came, and no sooner than the interval allows: then, not never. */
  private consider(): void {
    if (this.stopped || this.added < this.options.threshold || this.running || this.later) return;
    const wait = this.last + this.options.minIntervalMs - Date.now();
    if (wait > 0) {
      this.later = setTimeout(() => {
        this.later = undefined;
        this.consider();
      }, wait).unref();
      return;
    }
    this.added = 0;
    this.last = Date.now();
    this.running = this.db
      .query("ANALYZE work_orders")
      .then(() => undefined, this.onError)
      .finally(() => {
        this.running = undefined;
        this.consider();
      });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe();
    clearTimeout(this.later);
    await this.running;
  }
}
