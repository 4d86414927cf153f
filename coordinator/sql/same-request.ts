// Whether an enqueue that repeats an idempotency key asks for the work order the key already names.
// A retry sends the same body and gets that order back; a different body under the same key is a
// mistake (a key reused for another command), answered 422 rather than with an order it did not ask
// for. Documents compare as JSON values, as jsonb keeps them: key order and `1.0` against `1` do not count.
import type { WorkOrderCreate } from "../../protocol/api.ts";
import { formatSelector } from "../../protocol/selector.ts";
import type { WorkOrderRow } from "./views.ts";

/** The columns an enqueue sets, named as the API names them. */
const REQUESTED = {
  adapter: "adapter",
  spec: "spec",
  selector: "selector_text",
  agent: "target_agent",
  labels: "labels",
  priority: "priority",
  timeoutSeconds: "timeout_seconds",
  maxAttempts: "max_attempts",
  retryOn: "retry_on",
  retryBackoffSeconds: "retry_backoff_seconds",
  queueTimeoutSeconds: "queue_timeout_seconds",
  metadata: "metadata",
} as const satisfies Partial<Record<keyof WorkOrderCreate, keyof WorkOrderRow>>;

export type Requested = Pick<WorkOrderRow, (typeof REQUESTED)[keyof typeof REQUESTED]>;

/** The same columns, as SQL over `wo`. */
export const REQUESTED_COLUMNS = Object.values(REQUESTED)
  .map((column) => `wo.${column}`)
  .join(", ");

/** The columns `order` would be stored with. */
export function requested(order: WorkOrderCreate): Requested {
  return {
    adapter: order.adapter,
    spec: order.spec,
    selector_text: formatSelector(order.selector),
    target_agent: order.agent ?? null,
    labels: order.labels,
    priority: order.priority,
    timeout_seconds: order.timeoutSeconds ?? null,
    max_attempts: order.maxAttempts,
    retry_on: order.retryOn,
    retry_backoff_seconds: order.retryBackoffSeconds,
    queue_timeout_seconds: order.queueTimeoutSeconds ?? null,
    metadata: order.metadata,
  };
}

/** The first field (by its API name) in which `order` asks for other than `stored`, if any. */
export function firstDifference(order: Requested, stored: Requested): keyof typeof REQUESTED | undefined {
  for (const [field, column] of Object.entries(REQUESTED) as [keyof typeof REQUESTED, keyof Requested][]) {
    const [a, b] = [order[column], stored[column]];
    const same = column === "retry_on" ? canonical(endings(a)) === canonical(endings(b)) : canonical(a) === canonical(b);
    if (!same) return field;
  }
  return undefined;
}

/** Retries as a set: the same endings, in any order, any number of times each. */
const endings = (list: unknown) => [...new Set(list as string[])].sort();

/** JSON text with every object's keys sorted. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}
