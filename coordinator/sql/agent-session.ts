// An agent's presence: registered (or updated) at hello, released at disconnect, seen in batches.
import type { AgentMode } from "../../protocol/messages.ts";
import type { Labels } from "../../protocol/selector.ts";
import type { Queryable } from "../db/database.ts";

export type AgentHello = { name: string; labels: Labels; capacity: number; mode: AgentMode; version: string };

export async function agentConnect(db: Queryable, agent: AgentHello, sessionId: string): Promise<string> {
  const [row] = await db.query<{ id: string }>(
    `INSERT INTO agents (name, labels, capacity, mode, version, session_id)
     VALUES ($1, $2::jsonb, $3, $4, $5, $6)
     ON CONFLICT (name) DO UPDATE SET labels = excluded.labels, capacity = excluded.capacity,
       mode = excluded.mode, version = excluded.version, session_id = excluded.session_id, last_seen_at = now()
     RETURNING id::text AS id`,
    [agent.name, JSON.stringify(agent.labels), agent.capacity, agent.mode, agent.version, sessionId],
  );
  return row!.id;
}

export async function agentDisconnect(db: Queryable, agentId: string, sessionId: string): Promise<void> {
  await db.query(`UPDATE agents SET session_id = NULL, last_seen_at = now() WHERE id = $1 AND session_id = $2`, [
    agentId,
    sessionId,
  ]);
}

export async function agentsSeen(db: Queryable, agentIds: string[]): Promise<void> {
  await db.query(`UPDATE agents SET last_seen_at = now() WHERE id = ANY($1::bigint[])`, [agentIds]);
}

export type ActiveJob = { jobId: string; seq: number; cancelReason: string | null };

export async function agentActiveJobs(db: Queryable, agentId: string): Promise<ActiveJob[]> {
  return db.query<ActiveJob>(
    `SELECT id::text AS "jobId", seq, cancel_reason AS "cancelReason" FROM jobs
     WHERE agent_id = $1 AND state IN ('claimed', 'running') ORDER BY id`,
    [agentId],
  );
}
