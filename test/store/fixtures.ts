// Shared set-up for the store suites: a fresh database per suite, agents, and work orders built
// through the API's own schema so they look exactly like what the HTTP layer would enqueue.
import { afterAll, beforeAll } from "vitest";
import type { Database, Queryable } from "../../coordinator/db/database.ts";
import { agentConnect } from "../../coordinator/sql/agent-session.ts";
import type { Claimant } from "../../coordinator/sql/work-order-claim.ts";
import { type Applied, jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import { workOrderCancel } from "../../coordinator/sql/work-order-cancel.ts";
import { type EventRow as Stored, workOrderEvents } from "../../coordinator/sql/work-order-read.ts";
import { type Inserted, workOrderInsertRows } from "../../coordinator/sql/work-order-insert.ts";
import { type WorkOrderCreate, workOrderCreate } from "../../protocol/api.ts";
import type { AgentMode, JobMessage } from "../../protocol/messages.ts";
import type { Labels } from "../../protocol/selector.ts";
import { freshDatabase, type Kind } from "../support/databases.ts";

/** Opens a fresh database before the suite's tests and drops it after; the getter returns it. */
export function useDatabase(kind: Kind, poolSize?: number): () => Database {
  let db: Database | undefined;
  beforeAll(async () => {
    db = await freshDatabase(kind, poolSize);
  }, 60_000);
  afterAll(async () => {
    await db?.close();
  }, 60_000);
  return () => {
    if (!db) throw new Error("the database is not open");
    return db;
  };
}

/** A work order as `POST /v1/work-orders` would receive it (selector in text form). */
export function order(body: Record<string, unknown> = {}): WorkOrderCreate {
  return workOrderCreate.parse({ spec: { command: ["true"] }, ...body });
}

export async function connectAgent(
  db: Queryable,
  name: string,
  labels: Labels = {},
  mode: AgentMode = "queue",
): Promise<Claimant> {
  const agentId = (await agentConnect(db, { name, labels, capacity: 100, mode, version: "test" }, `session-${name}`))!.id;
  return { agentId, name, labels, queueMode: mode === "queue" };
}

/** Cancels every pending work order, so a test starts with an empty queue. */
export async function cancelAllPending(db: Database): Promise<void> {
  const rows = await db.query<{ id: string }>(`SELECT id::text AS id FROM work_orders WHERE state = 'pending'`);
  for (const { id } of rows) {
    const outcome = await workOrderCancel(db, id, "test reset");
    if (outcome.kind !== "cancelled") throw new Error(`could not reset work order ${id}: ${outcome.kind}`);
  }
}

/** A small seeded PRNG (mulberry32), so a failing concurrent run can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type EventRow = Omit<Stored, "at">;

/** A work order's events as the API reads them. */
export async function eventsOf(db: Queryable, workOrderId: string): Promise<EventRow[]> {
  return (await workOrderEvents(db, workOrderId)).map(({ at: _, ...event }) => event);
}

/** Inserts one work order, or finds the one already enqueued under its idempotency key. */
export async function workOrderInsert(db: Database, order: WorkOrderCreate): Promise<Inserted> {
  const [inserted] = await workOrderInsertRows(db, [order]);
  return inserted!;
}

/** Applies one job message in a transaction of its own, as a batch of one. */
export async function jobApply(db: Database, agentId: string, message: JobMessage): Promise<Applied> {
  const [applied] = await db.transaction((tx) => jobApplyIn(tx, [{ agentId, message }]));
  return applied!;
}

/** Commits in this database so far; statistics reach pg_stat_database lazily, so flush this backend's first. */
export async function commits(db: Queryable): Promise<number> {
  await db.query(`SELECT pg_stat_force_next_flush()`);
  await db.query(`SELECT pg_stat_clear_snapshot()`);
  const [row] = await db.query<{ n: string }>(`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = current_database()`);
  return Number(row!.n);
}

/** The commits that counting commits itself adds, once its statements are prepared (PGlite prepares on first use). */
export async function commitsOverhead(db: Queryable): Promise<number> {
  await commits(db);
  return -(await commits(db)) + (await commits(db));
}
