// Keeps the planner's picture of the work-order pool current. CI fanning out thousands of work
// orders changes the pending set in a second; autovacuum looks once a minute, and until then the
// planner, expecting a handful of pending rows, has each claim fetch and sort the whole backlog
// instead of walking the pending index for the few rows it takes.
import type { Bus } from "./bus.ts";
import type { Queryable } from "./db/database.ts";
import { Upkeep, type UpkeepOptions } from "./upkeep.ts";

export class Statistics {
  private readonly upkeep: Upkeep;
  private readonly unsubscribe: () => void;

  constructor(db: Queryable, bus: Bus, onError: (error: unknown) => void, options: UpkeepOptions = { threshold: 1000, minIntervalMs: 10_000 }) {
    this.upkeep = new Upkeep(async () => void (await db.query("ANALYZE work_orders")), onError, options);
    this.unsubscribe = bus.on("enqueued", (orders) => this.upkeep.add(orders.length));
  }

  async stop(): Promise<void> {
    this.unsubscribe();
    await this.upkeep.stop();
  }
}
