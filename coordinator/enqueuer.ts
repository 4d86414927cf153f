// Single enqueues (POST /v1/work-orders) from concurrent clients share statements and commits:
// a batch goes as soon as the event loop turns, and what arrives while it runs forms the next,
// so an idle coordinator adds no delay and a busy one commits many work orders at once.
import type { WorkOrderCreate } from "../protocol/api.ts";
import { Batcher } from "./batcher.ts";
import type { Database } from "./db/database.ts";
import { type Inserted, workOrderInsertRows } from "./sql/work-order-insert.ts";

export class Enqueuer {
  private readonly batcher: Batcher<WorkOrderCreate, Inserted>;

  constructor(db: Database) {
    this.batcher = new Batcher((orders) => workOrderInsertRows(db, orders), { delayMs: 0, maxBatch: 500 });
  }

  enqueue(order: WorkOrderCreate): Promise<Inserted> {
    return this.batcher.submit(order);
  }
}
