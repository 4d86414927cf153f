// The claim: one statement picks up to N pending work orders an agent may run, in priority then
// age order, skipping rows another claim holds (FOR UPDATE SKIP LOCKED, so two agents can never
// get the same one), creates a job for each and records the transition. When the previous attempt
// started an external run and then lost hold of it (agent lost, or handed back), the assignment
// says so, and the new attempt adopts that run instead of starting another.
import type { Assignment } from "../../protocol/messages.ts";
import type { Labels } from "../../protocol/selector.ts";
import { workOrderMachine } from "../../protocol/states.ts";
import type { Queryable } from "../db/database.ts";
import { storedSelectorMatches } from "./selector-match.ts";

const [FROM, ...others] = workOrderMachine.sourcesOf("claimed");
if (FROM !== "pending" || others.length > 0) throw new Error("claim assumes pending -> claimed");

const CLAIM = `
WITH picked AS (
  SELECT wo.id FROM work_orders wo
  WHERE wo.state = '${FROM}' AND wo.run_after <= now()
    AND (wo.target_agent = $3 OR ($4 AND wo.target_agent IS NULL AND ${storedSelectorMatches("wo.selector", "$2::jsonb")}))
  ORDER BY wo.priority DESC, wo.id
  LIMIT $5
  FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE work_orders wo
  SET state = 'claimed', attempts = wo.attempts + 1, latest_job_id = nextval('jobs_id_seq'), updated_at = now()
  FROM picked WHERE wo.id = picked.id
  RETURNING wo.id, wo.attempts, wo.latest_job_id, wo.adapter, wo.spec, wo.timeout_seconds, wo.priority
), job AS (
  INSERT INTO jobs (id, work_order_id, attempt, agent_id)
  SELECT latest_job_id, id, attempts, $1 FROM claimed
), event AS (
  INSERT INTO work_order_events (work_order_id, job_id, from_state, to_state)
  SELECT id, latest_job_id, '${FROM}', 'claimed' FROM claimed
)
SELECT c.latest_job_id AS "jobId", c.id AS "workOrderId", c.attempts AS attempt, c.adapter, c.spec,
  c.timeout_seconds AS "timeoutSeconds",
  CASE WHEN prev.external_id IS NOT NULL AND (prev.state = 'lost' OR prev.infrastructure)
    THEN jsonb_build_object('externalId', prev.external_id, 'externalUrl', prev.external_url) END AS adopt
FROM claimed c LEFT JOIN jobs prev ON prev.work_order_id = c.id AND prev.attempt = c.attempts - 1
ORDER BY c.priority DESC, c.id`;

export type Claimant = {
  agentId: string;
  name: string;
  labels: Labels;
  /** In work-order mode an agent runs only the work orders addressed to it by name. */
  queueMode: boolean;
};

export async function workOrderClaim(db: Queryable, agent: Claimant, limit: number): Promise<Assignment[]> {
  return db.query<Assignment>(CLAIM, [agent.agentId, JSON.stringify(agent.labels), agent.name, agent.queueMode, limit]);
}
