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
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: Queryable,
    bus: Bus,
    private readonly onError: (error: unknown) => void,
    private readonly options: StatisticsOptions = { threshold: 1000, minIntervalMs: 10_000 },
  ) {
    this.unsubscribe = bus.on("enqueued", (orders) => this.grew(orders.length));
  }

  private grew(rows: number): void {
    this.added += rows;
    if (this.added < this.options.threshold || this.running || Date.now() - this.last < this.options.minIntervalMs) return;
    this.added = 0;
    this.last = Date.now();
    this.running = this.db
      .query("ANALYZE work_orders")
      .then(() => undefined, this.onError)
      .finally(() => (this.running = undefined));
  }

  async stop(): Promise<void> {
    this.unsubscribe();
    await this.running;
  }
}
