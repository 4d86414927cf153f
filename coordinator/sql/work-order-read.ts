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
  params.push(filter.limit);
  return db.query<WorkOrderRow>(
    `SELECT ${WORK_ORDER_COLUMNS} FROM work_orders wo
     ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY wo.id DESC LIMIT $${params.length}`,
    params,
  );
}

export type EventRow = { at: Date | string; job_id: string | null; from_state: string | null; to_state: string; reason: string | null };

export async function workOrderEvents(db: Queryable, id: string): Promise<EventRow[]> {
  return db.query<EventRow>(
    `SELECT created_at AS at, job_id, from_state, to_state, reason FROM work_order_events
     WHERE work_order_id = $1 ORDER BY id`,
    [id],
  );
}
