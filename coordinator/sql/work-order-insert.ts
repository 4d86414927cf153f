import type { WorkOrderCreate } from "../../protocol/api.ts";
import { formatSelector } from "../../protocol/selector.ts";
import type { Queryable } from "../db/database.ts";
import { WORK_ORDER_COLUMNS, type WorkOrderRow } from "./views.ts";

const INSERT = `
WITH wo AS (
  INSERT INTO work_orders (adapter, spec, selector, selector_text, target_agent, labels, priority,
    timeout_seconds, max_attempts, idempotency_key, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds)
  VALUES ($1, $2::jsonb, $3::jsonb, $4, $5, $6::jsonb, $7, $8, $9, $10, $11::jsonb, $12::text[], $13, $14)
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING *
), event AS (
  INSERT INTO work_order_events (work_order_id, to_state) SELECT id, state FROM wo
)
SELECT ${WORK_ORDER_COLUMNS} FROM wo`;

const BY_KEY = `SELECT ${WORK_ORDER_COLUMNS} FROM work_orders wo WHERE wo.idempotency_key = $1`;

export type Inserted = { row: WorkOrderRow; created: boolean };

/** Inserts a work order, or returns the one already enqueued under the same idempotency key. */
export async function workOrderInsert(db: Queryable, order: WorkOrderCreate): Promise<Inserted> {
  const [row] = await db.query<WorkOrderRow>(INSERT, [
    order.adapter,
    JSON.stringify(order.spec),
    JSON.stringify(order.selector),
    formatSelector(order.selector),
    order.agent ?? null,
    JSON.stringify(order.labels),
    order.priority,
    order.timeoutSeconds ?? null,
    order.maxAttempts,
    order.idempotencyKey ?? null,
    JSON.stringify(order.metadata),
    order.retryOn,
    order.retryBackoffSeconds,
    order.queueTimeoutSeconds ?? null,
  ]);
  if (row) return { row, created: true };
  // The key was taken: by a row visible now, even if committed after this statement began.
  const [existing] = await db.query<WorkOrderRow>(BY_KEY, [order.idempotencyKey]);
  if (!existing) throw new Error(`work order with idempotency key ${order.idempotencyKey} vanished`);
  return { row: existing, created: false };
}
