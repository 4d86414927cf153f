// Many work orders in one statement: the rows travel as one jsonb array, are inserted in the
// order given (ids ascend with it), and repeats of an idempotency key resolve to the existing row.
import type { WorkOrderCreate } from "../../protocol/api.ts";
import { formatSelector } from "../../protocol/selector.ts";
import type { Queryable } from "../db/database.ts";
import type { Enqueued } from "../bus.ts";

const INSERT = `
WITH input AS (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(ord int, adapter text, spec jsonb, selector jsonb,
    selector_text text, target_agent text, labels jsonb, priority int, timeout_seconds int, max_attempts int,
    idempotency_key text, metadata jsonb, retry_on text[], retry_backoff_seconds int, queue_timeout_seconds int)
), wo AS (
  INSERT INTO work_orders (adapter, spec, selector, selector_text, target_agent, labels, priority, timeout_seconds,
    max_attempts, idempotency_key, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds)
  SELECT adapter, spec, selector, selector_text, target_agent, labels, priority, timeout_seconds,
    max_attempts, idempotency_key, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds
  FROM input ORDER BY ord
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING id, idempotency_key, selector, target_agent
), event AS (
  INSERT INTO work_order_events (work_order_id, to_state) SELECT id, 'pending' FROM wo
)
SELECT id::text AS id, idempotency_key AS key, selector, target_agent AS "targetAgent" FROM wo ORDER BY id`;

const BY_KEYS = `SELECT id::text AS id, idempotency_key AS key FROM work_orders WHERE idempotency_key = ANY($1::text[])`;

type Created = Enqueued & { key: string | null };

export type InsertedMany = { ids: string[]; created: Enqueued[] };

function row(order: WorkOrderCreate, ord: number) {
  return {
    ord,
    adapter: order.adapter,
    spec: order.spec,
    selector: order.selector,
    selector_text: formatSelector(order.selector),
    target_agent: order.agent ?? null,
    labels: order.labels,
    priority: order.priority,
    timeout_seconds: order.timeoutSeconds ?? null,
    max_attempts: order.maxAttempts,
    idempotency_key: order.idempotencyKey ?? null,
    metadata: order.metadata,
    retry_on: order.retryOn,
    retry_backoff_seconds: order.retryBackoffSeconds,
    queue_timeout_seconds: order.queueTimeoutSeconds ?? null,
  };
}

/** Inserts the work orders; `ids` answers each one in the order given (an existing one for a repeated key). */
export async function workOrderInsertMany(db: Queryable, orders: WorkOrderCreate[]): Promise<InsertedMany> {
  const created = await db.query<Created>(INSERT, [JSON.stringify(orders.map(row))]);
  const byKey = new Map(created.filter((c) => c.key !== null).map((c) => [c.key!, c.id]));
  const missing = [...new Set(orders.map((o) => o.idempotencyKey).filter((k): k is string => k !== undefined && !byKey.has(k)))];
  if (missing.length > 0) for (const { id, key } of await db.query<{ id: string; key: string }>(BY_KEYS, [missing])) byKey.set(key, id);
  const unkeyed = created.filter((c) => c.key === null).map((c) => c.id);
  const ids = orders.map((o) => (o.idempotencyKey === undefined ? unkeyed.shift()! : byKey.get(o.idempotencyKey)!));
  return { ids, created: created.map(({ key: _, ...order }) => order) };
}
