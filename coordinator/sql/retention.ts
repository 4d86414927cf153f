// Retention: work orders that ended longer ago than the retention go, with their jobs, logs and
// events; so do agents not seen for as long that hold no job. Each statement takes rows no other
// coordinator holds (SKIP LOCKED), so replicas may clean at once without waiting on each other.
import { endings } from "../../protocol/states.ts";
import type { Database } from "../db/database.ts";
import { ACTIVE_JOB_STATES } from "./active-jobs.ts";

/** Work orders a statement deletes: each may bring a job's log of up to the log limit with it. */
const BATCH = 100;
/** Statements a pass runs at most, so that a long backlog cannot hold the reaper up. */
const BATCHES_PER_PASS = 10;

const ENDED = endings.map((s) => `'${s}'`).join(", ");
const CUTOFF = "now() - make_interval(days => $1)";

// Due work orders are found through work_orders_ended; their jobs through the index of their work
// order and attempt, which leaves out returned jobs, and through jobs_returned for those. The jobs'
// logs go by an array: rows a CTE passes on are guessed, and a guess too high reads job_logs whole.
const DOOMED = `
SELECT id::text AS id FROM work_orders
WHERE state IN (${ENDED}) AND updated_at < ${CUTOFF}
ORDER BY updated_at LIMIT ${BATCH}
FOR UPDATE SKIP LOCKED`;

// Their jobs, locked without waiting. A cancel and a late job message lock a job before its work
// order, so waiting here for one of them, which waits for the work order held above, would
// deadlock: an order whose job another holds is left for a later pass.
const FREE = `
WITH live AS (
  SELECT work_order_id FROM jobs WHERE work_order_id = ANY($1::bigint[]) AND state <> 'returned' FOR UPDATE SKIP LOCKED
), returned AS (
  SELECT work_order_id FROM jobs WHERE work_order_id = ANY($1::bigint[]) AND state = 'returned' FOR UPDATE SKIP LOCKED
), held AS (
  (SELECT work_order_id FROM jobs WHERE work_order_id = ANY($1::bigint[]) AND state <> 'returned'
   UNION ALL SELECT work_order_id FROM jobs WHERE work_order_id = ANY($1::bigint[]) AND state = 'returned')
  EXCEPT ALL
  (SELECT work_order_id FROM live UNION ALL SELECT work_order_id FROM returned)
)
SELECT o.id::text AS id FROM unnest($1::bigint[]) AS o(id) WHERE o.id NOT IN (SELECT work_order_id FROM held)`;

const DELETE_DOOMED = `
WITH job AS (
  DELETE FROM jobs WHERE work_order_id = ANY($1::bigint[]) AND state <> 'returned' RETURNING id
), returned AS (
  DELETE FROM jobs WHERE work_order_id = ANY($1::bigint[]) AND state = 'returned' RETURNING id
), logs AS (
  DELETE FROM job_logs WHERE job_id = ANY(ARRAY(SELECT id FROM job UNION ALL SELECT id FROM returned))
), events AS (
  DELETE FROM work_order_events WHERE work_order_id = ANY($1::bigint[])
)
DELETE FROM work_orders WHERE id = ANY($1::bigint[])`;

// A job keeps its agent's name, so an agent's row may go while jobs of retained work orders name
// it; not while it holds one, nor while its name is bound to a token still good: another token's
// agent could take the name, and the work addressed to it, once the row is gone. An agent still
// connected renews its lease; one a stopped coordinator left marked connected has let it lapse.
const FORGET = `
DELETE FROM agents WHERE id IN (
  SELECT a.id FROM agents a
  WHERE a.last_seen_at < ${CUTOFF} AND (a.lease_expires_at IS NULL OR a.lease_expires_at < now())
    AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.agent_id = a.id AND j.state IN (${ACTIVE_JOB_STATES}))
    AND NOT EXISTS (SELECT 1 FROM tokens t WHERE t.id = a.token_id AND t.revoked_at IS NULL)
  ORDER BY a.id LIMIT ${BATCH}
  FOR UPDATE SKIP LOCKED
) RETURNING id::text AS id`;

export type Purged = { workOrders: number; agents: number; more: boolean };

/**
 * Deletes what outlived `retainDays`, a batch at a time; `more` says the pass stopped at its quota
 * with rows perhaps left.
 */
export async function purgeExpired(db: Database, retainDays: number): Promise<Purged> {
  const purged: Purged = { workOrders: 0, agents: 0, more: false };
  for (let batch = 0; batch < BATCHES_PER_PASS; batch++) {
    const { due, deleted } = await purgeBatch(db, retainDays);
    purged.workOrders += deleted;
    if (due < BATCH) break;
    purged.more = batch === BATCHES_PER_PASS - 1;
  }
  const forgotten = await db.query(FORGET, [retainDays]);
  purged.agents = forgotten.length;
  purged.more ||= forgotten.length === BATCH;
  return purged;
}

/** Deletes a batch of due work orders with all they own; answers how many were due, and how many went. */
function purgeBatch(db: Database, retainDays: number): Promise<{ due: number; deleted: number }> {
  return db.transaction(async (tx) => {
    const due = (await tx.query<{ id: string }>(DOOMED, [retainDays])).map((row) => row.id);
    if (due.length === 0) return { due: 0, deleted: 0 };
    const doomed = (await tx.query<{ id: string }>(FREE, [due])).map((row) => row.id);
    if (doomed.length > 0) await tx.query(DELETE_DOOMED, [doomed]);
    return { due: due.length, deleted: doomed.length };
  });
}
