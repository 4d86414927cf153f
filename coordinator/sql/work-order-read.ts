import { z } from "zod";
import type { workOrderQuery } from "../../protocol/api.ts";
import { formatSelector } from "../../protocol/selector.ts";
import type { Queryable } from "../db/database.ts";
import { selectorMatches } from "./selector-match.ts";
import { WORK_ORDER_COLUMNS, type WorkOrderRow } from "./views.ts";

export async function workOrderGet(db: Queryable, id: string): Promise<WorkOrderRow | undefined> {
  const [row] = await db.query<WorkOrderRow>(`SELECT ${WORK_ORDER_COLUMNS} FROM work_orders wo WHERE wo.id = $1`, [id]);
  return row;
}

export async function workOrderList(db: Queryable, filter: z.output<typeof workOrderQuery>): Promise<WorkOrderRow[]> {
  const params: unknown[] = [];
  const where: string[] = [];
  const add = (clause: (p: string) => string, value: unknown) => {
    params.push(value);
    where.push(clause(`$${params.length}`));
  };
  if (filter.state) add((p) => `wo.state = ${p}`, filter.state);
  if (filter.agent) add((p) => `wo.target_agent = ${p}`, filter.agent);
  if (filter.selector) add((p) => `wo.selector_text = ${p}`, formatSelector(filter.selector));
  if (filter.before) add((p) => `wo.id < ${p}`, filter.before);
  if (filter.labels) where.push(selectorMatches(filter.labels, "wo.labels", params));
  params.push(filter.limit + 1); // one more: whether another page follows
  return db.query<WorkOrderRow>(
    `SELECT ${WORK_ORDER_COLUMNS} FROM work_orders wo
     ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY wo.id DESC LIMIT $${params.length}`,
    params,
  );
}

export type EventRow = { at: Date | string; job_id: string | null; from_state: string | null; to_state: string; reason: string | null };

// Two events are not stored, being rows of their own already: a work order's creation is its row
// (see work-order-insert.ts), and each claim is its job's (see work-order-claim.ts). Histories
// written before keep theirs stored, and are read as they were. A claim leads its job's events,
// which all come before the next job's claim: only a work order's latest job moves it, and a job
// is the latest until the next claim. The events of no job that follow creation end the work order.
const EVENTS = `
SELECT at, job_id, from_state, to_state, reason FROM (
  SELECT 0::bigint AS job_key, 0 AS kind, 0::bigint AS id, wo.created_at AS at, NULL::bigint AS job_id,
    NULL::work_order_state AS from_state, 'pending'::work_order_state AS to_state, NULL::text AS reason
  FROM work_orders wo
  WHERE wo.id = $1 AND NOT EXISTS (SELECT 1 FROM work_order_events WHERE work_order_id = $1 AND from_state IS NULL)
  UNION ALL
  SELECT j.id, 0, 0, j.created_at, j.id, 'pending', 'claimed', NULL
  FROM jobs j
  WHERE j.work_order_id = $1
    AND NOT EXISTS (SELECT 1 FROM work_order_events WHERE work_order_id = $1 AND job_id = j.id AND to_state = 'claimed')
  UNION ALL
  SELECT CASE WHEN from_state IS NULL THEN 0 ELSE coalesce(job_id, 9223372036854775807) END, 1, id,
    created_at, job_id, from_state, to_state, reason
  FROM work_order_events WHERE work_order_id = $1
) e ORDER BY job_key, kind, id`;

export async function workOrderEvents(db: Queryable, id: string): Promise<EventRow[]> {
  return db.query<EventRow>(EVENTS, [id]);
}
