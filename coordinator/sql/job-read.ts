import type { z } from "zod";
import type { JobView, jobQuery } from "../../protocol/api.ts";
import type { Queryable } from "../db/database.ts";
import { JOB_JSON, jobView } from "./views.ts";

type JobRow = { job: Parameters<typeof jobView>[0] };

const FROM = `FROM jobs j`;

export async function jobGet(db: Queryable, id: string): Promise<JobView | undefined> {
  const [row] = await db.query<JobRow>(`SELECT ${JOB_JSON} AS job ${FROM} WHERE j.id = $1`, [id]);
  return row && jobView(row.job);
}

export async function jobList(db: Queryable, filter: z.output<typeof jobQuery>): Promise<JobView[]> {
  const params: unknown[] = [];
  const where: string[] = [];
  const add = (column: string, op: string, value: unknown) => {
    params.push(value);
    where.push(`${column} ${op} $${params.length}`);
  };
  if (filter.workOrder) add("j.work_order_id", "=", filter.workOrder);
  if (filter.agent) add("j.agent_name", "=", filter.agent);
  if (filter.state) add("j.state", "=", filter.state);
  if (filter.before) add("j.id", "<", filter.before);
  params.push(filter.limit + 1); // one more: whether another page follows
  const rows = await db.query<JobRow>(
    `SELECT ${JOB_JSON} AS job ${FROM} ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY j.id DESC LIMIT $${params.length}`,
    params,
  );
  return rows.map((r) => jobView(r.job));
}
