import type { z } from "zod";
import type { AgentView, agentQuery } from "../../protocol/api.ts";
import type { Queryable } from "../db/database.ts";
import { selectorMatches } from "./selector-match.ts";
import { iso } from "./views.ts";

type AgentRow = Omit<AgentView, "lastSeenAt"> & { lastSeenAt: string | Date };

/** In session, its lease current: a coordinator that died without writing the disconnect leaves the session. */
const CONNECTED = "(session_id IS NOT NULL AND lease_expires_at > now())";

/** A page of agents in name order, filtered as asked. */
export async function agentList(db: Queryable, filter: z.output<typeof agentQuery>): Promise<AgentView[]> {
  const params: unknown[] = [];
  const where: string[] = [];
  if (filter.connected !== undefined) where.push(`${filter.connected ? "" : "NOT "}${CONNECTED}`);
  if (filter.after !== undefined) {
    params.push(filter.after);
    where.push(`name > $${params.length}`);
  }
  if (filter.labels) where.push(selectorMatches(filter.labels, "labels", params));
  params.push(filter.limit + 1); // one more: whether another page follows
  const rows = await db.query<AgentRow>(
    `SELECT id::text AS id, name, labels, capacity, prefetch, mode::text AS mode, version,
       ${CONNECTED} AS connected, last_seen_at AS "lastSeenAt"
     FROM agents ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
     ORDER BY name LIMIT $${params.length}`,
    params,
  );
  return rows.map((row) => ({ ...row, lastSeenAt: iso(row.lastSeenAt) }));
}
