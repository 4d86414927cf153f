// An agent's presence: registered (or updated) at hello, released at disconnect, seen in batches.
import type { AgentMode } from "../../protocol/messages.ts";
import type { Labels } from "../../protocol/selector.ts";
import type { Queryable } from "../db/database.ts";
import { ACTIVE_JOB_STATES } from "./active-jobs.ts";

export type AgentHello = { name: string; labels: Labels; capacity: number; prefetch?: number; mode: AgentMode; version: string; tokenId?: string };

/**
 * `heldSeconds`: how long the lease of the name's previous holder had left, which may be another
 * process cut off from its coordinator and still running its jobs until its fence.
 */
export type Registered = { id: string; heldSeconds: number };

/**
 * Registers (or updates) the agent and starts its lease; its open jobs are its own again. Undefined
 * when the name was let in with another token that is still good: the name is that token's until
 * it is revoked (a rotation: the agent comes back with the new one once the old is revoked).
 */
export async function agentConnect(db: Queryable, agent: AgentHello, sessionId: string, leaseSeconds = 30, dueSeconds = leaseSeconds): Promise<Registered | undefined> {
  const [row] = await db.query<Registered>(
    `WITH previous AS (SELECT lease_expires_at FROM agents WHERE name = $1)
     INSERT INTO agents (name, labels, capacity, prefetch, mode, version, session_id, session_since, session_due, lease_expires_at, token_id)
     VALUES ($1, $2::jsonb, $3, $8, $4, $5, $6, now(), now() + make_interval(secs => $10), now() + make_interval(secs => $7), $9)
     ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity, prefetch = excluded.prefetch,
       mode = excluded.mode, version = excluded.version, session_id = excluded.session_id, session_since = now(), session_due = excluded.session_due,
       session_seen_at = NULL, last_seen_at = now(), lease_expires_at = excluded.lease_expires_at, token_id = excluded.token_id
     WHERE agents.token_id IS NULL OR agents.token_id = excluded.token_id
       OR NOT EXISTS (SELECT 1 FROM tokens WHERE tokens.id = agents.token_id AND tokens.revoked_at IS NULL)
     RETURNING id::text AS id, greatest(0, extract(epoch FROM (SELECT lease_expires_at FROM previous) - now()))::float8 AS "heldSeconds"`,
    [agent.name, JSON.stringify(agent.labels), agent.capacity, agent.mode, agent.version, sessionId, leaseSeconds, agent.prefetch ?? 0, agent.tokenId ?? null, dueSeconds],
  );
  return row;
}

/** The agent's socket closed: its lease runs out after the grace unless it reconnects. */
export async function agentDisconnect(db: Queryable, agentId: string, sessionId: string, leaseSeconds: number): Promise<void> {
  await db.query(
    `UPDATE agents SET session_id = NULL, session_since = NULL, session_seen_at = NULL, session_due = NULL, last_seen_at = now(),
       lease_expires_at = now() + make_interval(secs => $3)
     WHERE id = $1 AND session_id = $2`,
    [agentId, sessionId, leaseSeconds],
  );
}

export type PendingCancel = { jobId: string; agentId: string; reason: string };

/** A job the database says an agent holds. */
export type HeldJob = { jobId: string; agentId: string; cancelReason: string | null };

/**
 * Whether the row names no session, or another than the renewing one whose coordinator has let it
 * pass its due renewal. A replica from before migration 0012 writes no `session_due` (the row may
 * hold an earlier session's): its session must also have gone unrenewed since it registered for as
 * long as the renewing replica's own promise. Drop that, and `session_since`, once none runs.
 */
const RETAKE = `(a.session_id IS DISTINCT FROM x.session_id AND (a.session_id IS NULL
  OR coalesce(a.session_due, '-infinity') < now() AND coalesce(a.session_seen_at, a.session_since, '-infinity') < now() - make_interval(secs => $4)))`;

export type Renewal = { agentId: string; sessionId: string };

/** What a renewal answers: `replaced`, the agents whose session here another one, renewed elsewhere, has replaced. */
export type Renewed = { held: HeldJob[]; replaced: Set<string> };

/**
 * Renews the leases of the agents connected here and records that they were seen; answers their
 * open jobs, to be checked against what their sessions hold, and with the cancels asked and not
 * yet confirmed, to be sent again (a cancel travels to the coordinator holding the agent by a
 * notification, which can be lost).
 * A lease is renewed by agent, whichever session the row names: a registration that landed after
 * its socket closed must not cost the live one its jobs. The name is that session's once it has
 * been renewed where it is held; until then it may be such a registration, and the session renewing
 * here waits until the renewal its coordinator promised is due (`dueSeconds` from each renewal or
 * registration, by that coordinator's heartbeat), then takes the name back.
 */
export async function agentsSeen(db: Queryable, renewals: Renewal[], leaseSeconds: number, dueSeconds: number): Promise<Renewed> {
  const rows = await db.query<{ jobId: string | null; agentId: string; cancelReason: string | null }>(
    `WITH input AS (
       SELECT * FROM unnest($1::bigint[], $3::text[]) AS x(id, session_id)
     ), seen AS (
       UPDATE agents a SET last_seen_at = now(), lease_expires_at = now() + make_interval(secs => $2),
         session_id = CASE WHEN ${RETAKE} THEN x.session_id ELSE a.session_id END,
         session_since = CASE WHEN ${RETAKE} THEN now() ELSE a.session_since END,
         session_seen_at = CASE WHEN ${RETAKE} OR a.session_id = x.session_id THEN now() ELSE a.session_seen_at END,
         session_due = CASE WHEN ${RETAKE} OR a.session_id = x.session_id THEN now() + make_interval(secs => $4) ELSE a.session_due END
       FROM input x WHERE a.id = x.id
       RETURNING a.id, a.session_id IS DISTINCT FROM x.session_id AND a.session_seen_at IS NOT NULL AS replaced
     )
     SELECT id::text AS "jobId", agent_id::text AS "agentId", cancel_reason AS "cancelReason" FROM jobs
     WHERE agent_id = ANY($1::bigint[]) AND state IN (${ACTIVE_JOB_STATES})
     UNION ALL
     SELECT NULL, id::text, NULL FROM seen WHERE replaced`,
    [renewals.map((r) => r.agentId), leaseSeconds, renewals.map((r) => r.sessionId), dueSeconds],
  );
  const held = rows.filter((row): row is HeldJob => row.jobId !== null);
  return { held, replaced: new Set(rows.flatMap((row) => (row.jobId === null ? [row.agentId] : []))) };
}

export type ActiveJob = { jobId: string; seq: number; cancelReason: string | null };

export async function agentActiveJobs(db: Queryable, agentId: string): Promise<ActiveJob[]> {
  return db.query<ActiveJob>(
    `SELECT id::text AS "jobId", seq, cancel_reason AS "cancelReason" FROM jobs
     WHERE agent_id = $1 AND state IN (${ACTIVE_JOB_STATES}) ORDER BY id`,
    [agentId],
  );
}
