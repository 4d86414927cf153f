// The claim: one statement serves a group of waiting agents that share labels and mode. It gives
// each member the work orders addressed to it, up to its want, then deals queue work they may run
// over the free slots left in turn, in priority then age order, skipping rows another claim holds
// (FOR UPDATE SKIP LOCKED, so no two claims get the same one), and creates a job for each, which is
// also the claim's event (see work-order-read.ts). When the previous attempt started an external
// run and then lost hold of it (agent lost, or handed back), the assignment says so, and the new
// attempt adopts that run instead of starting another.
import type { Assignment } from "../../protocol/messages.ts";
import type { Labels } from "../../protocol/selector.ts";
import { workOrderMachine } from "../../protocol/states.ts";
import type { Queryable } from "../db/database.ts";
import { arrayLiteral } from "./array-literal.ts";
import { storedSelectorMatches } from "./selector-match.ts";

const [FROM, ...others] = workOrderMachine.sourcesOf("claimed");
if (FROM !== "pending" || others.length > 0) throw new Error("claim assumes pending -> claimed");

// Work addressed to a member goes to it first, up to its want, through the work_orders_addressed
// index (a probe per member name, and none at all while no addressed work is pending); the slots
// left take queue work. `NULLS LAST` matches the work_orders_pending index, so the queue scan stops
// after LIMIT rows instead of sorting the whole backlog (priority is never null, so the order is
// the same; the addressed scan needs it too, to walk its index). The queue scan locks only as many
// rows as addressed work left slots for: a row locked and not dealt would be skipped by a
// concurrent claim, which could then find the group's pool empty while it is not. The update and
// the adoption lookup go by key (`= ANY(ARRAY(...))`, a correlated subquery): the planner cannot
// estimate the dealt rows, and a hash join over the whole table would cost more than the claim.
// Only a retry looks for a run to adopt, so a first attempt's claim never reads `jobs`.
const CLAIM = `
WITH member AS (
  SELECT agent_id, name, want, (n - 1)::int AS ord
  FROM unnest($1::bigint[], $2::text[], $3::int[]) WITH ORDINALITY AS m(agent_id, name, want, n)
), named AS (
  -- One member per name: two sessions of one agent (a reconnect in flight) must not both get its work.
  SELECT DISTINCT ON (name) * FROM member ORDER BY name, ord DESC
), kept AS (
  SELECT a.id, n.agent_id, n.name, n.ord
  FROM named n CROSS JOIN LATERAL (
    SELECT wo.id FROM work_orders wo
    WHERE wo.state = '${FROM}' AND wo.target_agent = n.name AND wo.run_after <= now()
    ORDER BY wo.priority DESC NULLS LAST, wo.id
    LIMIT n.want
    FOR UPDATE SKIP LOCKED
  ) a
  WHERE EXISTS (SELECT 1 FROM work_orders WHERE state = '${FROM}' AND target_agent IS NOT NULL)
), queued AS (
  SELECT q.id, row_number() OVER (ORDER BY q.priority DESC, q.id) AS n FROM (
    SELECT wo.id, wo.priority FROM work_orders wo
    WHERE $5 AND wo.state = '${FROM}' AND wo.target_agent IS NULL AND wo.run_after <= now()
      AND ${storedSelectorMatches("wo.selector", "$4::jsonb")}
    ORDER BY wo.priority DESC NULLS LAST, wo.id
    LIMIT $6 - (SELECT count(*) FROM kept)
    FOR UPDATE SKIP LOCKED
  ) q
), slot AS (
  SELECT m.agent_id, m.name, m.ord, row_number() OVER (ORDER BY s.i, m.ord) AS n
  FROM member m CROSS JOIN LATERAL generate_series(1, m.want - (SELECT count(*) FROM kept k WHERE k.ord = m.ord)::int) AS s(i)
), assigned AS (
  SELECT id, agent_id, name, ord FROM kept
  UNION ALL
  SELECT q.id, s.agent_id, s.name, s.ord FROM queued q JOIN slot s ON s.n = q.n
), claimed AS (
  UPDATE work_orders wo
  SET state = 'claimed', attempts = wo.attempts + 1, latest_job_id = nextval('jobs_id_seq'), updated_at = now()
  WHERE wo.id = ANY(ARRAY(SELECT id FROM assigned))
  RETURNING wo.id, wo.attempts, wo.latest_job_id, wo.adapter, wo.spec, wo.timeout_seconds, wo.priority
), job AS (
  INSERT INTO jobs (id, work_order_id, attempt, agent_id, agent_name)
  SELECT c.latest_job_id, c.id, c.attempts, a.agent_id, a.name FROM claimed c JOIN assigned a ON a.id = c.id
)
SELECT a.agent_id::text AS "agentId", a.ord AS member, c.latest_job_id AS "jobId", c.id AS "workOrderId", c.attempts AS attempt,
  c.priority, c.adapter, c.spec, c.timeout_seconds AS "timeoutSeconds",
  CASE WHEN c.attempts > 1 THEN
    (SELECT jsonb_build_object('externalId', prev.external_id, 'externalUrl', prev.external_url) FROM jobs prev
     WHERE prev.work_order_id = c.id AND prev.attempt = c.attempts - 1 AND prev.state <> 'returned'
       AND prev.external_id IS NOT NULL AND (prev.state = 'lost' OR prev.infrastructure))
  END AS adopt
FROM claimed c JOIN assigned a ON a.id = c.id
ORDER BY c.priority DESC, c.id`;

/** What decides which work orders an agent may run. */
export type Eligibility = {
  labels: Labels;
  /** In work-order mode an agent runs only the work orders addressed to it by name. */
  queueMode: boolean;
};

export type Claimant = Eligibility & { agentId: string; name: string };

export type Member = { agentId: string; name: string; want: number };

/** `member`: the index in `members` of the one it was dealt to (an agent may briefly be a member twice). */
export type GroupAssignment = Assignment & { agentId: string; member: number };

/** Claims for agents that share `eligibility`: up to each member's `want` work orders. */
export async function workOrdersClaim(db: Queryable, eligibility: Eligibility, members: Member[]): Promise<GroupAssignment[]> {
  const total = members.reduce((sum, m) => sum + m.want, 0);
  if (total === 0) return [];
  const column = (value: (m: Member) => unknown) => arrayLiteral(members.map(value));
  const [ids, names, wants] = [column((m) => m.agentId), column((m) => m.name), column((m) => m.want)];
  return db.query<GroupAssignment>(CLAIM, [ids, names, wants, JSON.stringify(eligibility.labels), eligibility.queueMode, total]);
}

/** Claims up to `limit` work orders for one agent. */
export async function workOrderClaim(db: Queryable, agent: Claimant, limit: number): Promise<Assignment[]> {
  const claimed = await workOrdersClaim(db, agent, [{ agentId: agent.agentId, name: agent.name, want: limit }]);
  return claimed.map(({ agentId: _, member: __, ...assignment }) => assignment);
}
