// Single enqueues (POST /v1/work-orders) from concurrent clients share statements and commits:
// a batch goes as soon as the event loop turns, and what arrives while two run forms the next,
// so an idle coordinator adds no delay and a busy one commits many work orders at once. Two, not
// one: under load a one-row insert took 20 ms, and a POST waited for the batch before its own.
// An order that a quiet group's agent may run is created claimed for it, and handed to it at once.
import type { WorkOrderCreate } from "../protocol/api.ts";
import type { Assignment } from "../protocol/messages.ts";
import { Batcher } from "./batcher.ts";
import type { Database } from "./db/database.ts";
import { mayHaveCommitted } from "./db/unavailable.ts";
import type { Dispatcher, Hold } from "./dispatch/dispatcher.ts";
import { type Inserted, workOrderInsertRows } from "./sql/work-order-insert.ts";

export class Enqueuer {
  private readonly batcher: Batcher<WorkOrderCreate, Inserted>;

  constructor(
    private readonly db: Database,
    private readonly dispatcher?: Pick<Dispatcher, "hold">,
  ) {
    this.batcher = new Batcher((orders) => this.insert(orders), { delayMs: 0, maxBatch: 500, inFlight: 2 });
  }

  enqueue(order: WorkOrderCreate): Promise<Inserted> {
    return this.batcher.submit(order);
  }

  private async insert(orders: WorkOrderCreate[]): Promise<Inserted[]> {
    const holds = this.dispatcher?.hold(orders) ?? [];
    let inserted: Inserted[];
    try {
      inserted = await workOrderInsertRows(this.db, orders, holds.map((hold) => hold?.agentId));
    } catch (error) {
      const unsure = mayHaveCommitted(error);
      for (const hold of holds) unsure ? hold?.resync() : hold?.release();
      throw error;
    }
    inserted.forEach(({ row, created }, i) => settle(holds[i], created ? row : undefined));
    return inserted;
  }
}

/** Hands the job of an order created claimed to its agent, or gives the slot back. */
function settle(hold: Hold | undefined, row: Inserted["row"] | undefined): void {
  if (!hold) return;
  const job = row?.latest_job;
  if (!row || row.state !== "claimed" || !job) return hold.release();
  hold.assign({
    jobId: job.id,
    workOrderId: row.id,
    attempt: row.attempts,
    priority: row.priority,
    adapter: row.adapter as Assignment["adapter"],
    spec: row.spec,
    timeoutSeconds: row.timeout_seconds,
    adopt: null,
  });
}
