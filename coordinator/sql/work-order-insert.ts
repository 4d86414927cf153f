// Work orders in one statement: the rows travel as a parameter array per column, are inserted in
// the order given (ids ascend with it), and repeats of an idempotency key resolve to the existing
// row (arrays, not json: see array-literal.ts).
// Bulk enqueues go a chunk per statement in one transaction, and answer with ids; single
// enqueues, gathered by the Enqueuer, with whole rows. A single enqueue may name an agent that
// waits for it (`claimFor`): the work order is then created claimed, with its first job for it.
// A work order's creation is not written as an event: it is its row's `created_at`, and reads of
// its events begin with it (workOrderEvents), half the rows an enqueue would write otherwise. Nor
// is the claim of one created claimed: its job is that event.
import { setImmediate } from "node:timers/promises";
import type { WorkOrderCreate } from "../../protocol/api.ts";
import { formatSelector, type Selector } from "../../protocol/selector.ts";
import type { Database, Queryable } from "../db/database.ts";
import type { Enqueued } from "../bus.ts";
import { arrayLiteral, type Quoted } from "./array-literal.ts";
import { firstDifference, REQUESTED_COLUMNS, requested, type Requested } from "./same-request.ts";
import { WORK_ORDER_COLUMNS, type WorkOrderRow, workOrderColumns } from "./views.ts";

const COLUMNS = `adapter, spec, selector, selector_text, target_agent, labels, priority, timeout_seconds,
    max_attempts, idempotency_key, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds`;
/** `COLUMNS` from the input: the documents travel as text, and each row's `retry_on` as an array literal within. */
const VALUES = `adapter, spec::jsonb, selector::jsonb, selector_text, target_agent, labels::jsonb, priority, timeout_seconds,
    max_attempts, idempotency_key, metadata::jsonb, retry_on::text[], retry_backoff_seconds, queue_timeout_seconds`;
/** The rows, a parameter per column (`columns()`), numbered from 1 in `ord`. */
const INPUT = `unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[],
    $9::int[], $10::text[], $11::text[], $12::text[], $13::int[], $14::int[], $15::bigint[]) WITH ORDINALITY
  AS x(adapter, spec, selector, selector_text, target_agent, labels, priority, timeout_seconds,
    max_attempts, idempotency_key, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds, claim_agent, ord)`;

const BRIEF = `wo.id::text AS id, wo.idempotency_key`;

const ON_KEY_CONFLICT = `ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`;

// Without keys, no conflict clause: with one, Postgres inserts each row speculatively, which costs
// a bulk insert of keyless orders about 5% of its time.
const insertBrief = (onConflict: string) => `
WITH wo AS (
  INSERT INTO work_orders (${COLUMNS})
  SELECT ${VALUES} FROM ${INPUT} ORDER BY ord
  ${onConflict}
  RETURNING id, idempotency_key
)
SELECT ${BRIEF} FROM wo ORDER BY wo.id`;
const INSERT_BRIEF = insertBrief("");
const INSERT_BRIEF_KEYED = insertBrief(ON_KEY_CONFLICT);

// The job ids are drawn with the input, so that each job finds the agent its order was created for.
// Keyed rows go in key order (the unkeyed after them, in the order given): two of these in flight
// at once then wait for each other's keys in one order, and cannot deadlock.
const INSERT_CLAIMED = `
WITH input AS MATERIALIZED (
  SELECT *, CASE WHEN claim_agent IS NOT NULL THEN nextval('jobs_id_seq') END AS job_id
  FROM ${INPUT}
), wo AS (
  INSERT INTO work_orders (${COLUMNS}, state, attempts, latest_job_id)
  SELECT ${VALUES}, CASE WHEN job_id IS NULL THEN 'pending' ELSE 'claimed' END::work_order_state, (job_id IS NOT NULL)::int, job_id
  FROM input ORDER BY idempotency_key, ord
  ${ON_KEY_CONFLICT}
  RETURNING *
), job AS (
  INSERT INTO jobs (id, work_order_id, attempt, agent_id, agent_name)
  SELECT wo.latest_job_id, wo.id, 1, input.claim_agent, (SELECT name FROM agents WHERE id = input.claim_agent)
  FROM wo JOIN input ON input.job_id = wo.latest_job_id
  RETURNING *
)
SELECT ${workOrderColumns("job")} FROM wo ORDER BY wo.id`;

const byKeys = (columns: string) => `SELECT ${columns} FROM work_orders wo WHERE wo.idempotency_key = ANY($1::text[])`;
const BRIEF_BY_KEYS = byKeys(`${BRIEF}, ${REQUESTED_COLUMNS}`);
const ROWS_BY_KEYS = byKeys(WORK_ORDER_COLUMNS);

type Brief = Pick<WorkOrderRow, "id" | "idempotency_key">;

/** The parameters of `INPUT`, each an array literal. */
function columns(orders: WorkOrderCreate[], claimFor: (string | undefined)[]): string[] {
  // The orders of a bulk request mostly share their documents.
  const quoted: Quoted = new Map();
  const column = (value: (order: WorkOrderCreate, i: number) => unknown) => arrayLiteral(orders.map(value), quoted);
  // Orders that repeat a selector's text share its parse; the retries they take are a short list
  // of names. Each is written once a statement: together they were half of building its input.
  const selectors = new Map<WorkOrderCreate["selector"], string>();
  const retries = new Map<string, string>();
  return [
    column((o) => o.adapter),
    column((o) => JSON.stringify(o.spec)),
    column((o) => once(selectors, o.selector, () => JSON.stringify(o.selector))),
    column((o) => formatSelector(o.selector)),
    column((o) => o.agent),
    column((o) => JSON.stringify(o.labels)),
    column((o) => o.priority),
    column((o) => o.timeoutSeconds),
    column((o) => o.maxAttempts),
    column((o) => o.idempotencyKey),
    column((o) => JSON.stringify(o.metadata)),
    column((o) => once(retries, o.retryOn.join(), () => arrayLiteral(o.retryOn))),
    column((o) => o.retryBackoffSeconds),
    column((o) => o.queueTimeoutSeconds),
    column((_, i) => claimFor[i]),
  ];
}

/** What `make` gives for `key`, made the first time only. */
function once<K, V>(made: Map<K, V>, key: K, make: () => V): V {
  let value = made.get(key);
  if (value === undefined) made.set(key, (value = make()));
  return value;
}

/** Times the orders whose keys' rows vanished are inserted again before the call gives up. */
const VANISHED_ATTEMPTS = 3;

/**
 * What a statement keeps of its orders while it runs: their parameters and keys, and the orders
 * themselves only where a key may need them again. A bulk request's chunks are in flight
 * together, and its orders, held by each, outlived young-generation collections that then copied them.
 */
type Statement = {
  params: string[];
  keys: (string | undefined)[];
  /** Only where one has a key: to compare with the work order its key names, and to insert again if that vanished. */
  keyed?: { orders: WorkOrderCreate[]; claimFor: (string | undefined)[] };
};

function statement(orders: WorkOrderCreate[], claimFor: (string | undefined)[] = []): Statement {
  const keys = orders.map((o) => o.idempotencyKey);
  const keyed = keys.some((key) => key !== undefined) ? { orders, claimFor } : undefined;
  return { params: columns(orders, claimFor), keys, keyed };
}

/** A key that names a work order asked for otherwise: `field` is the first that differs. */
export type KeyReuse = { field: string; key: string; workOrderId: string };

export const describeReuse = ({ key, workOrderId, field }: KeyReuse) =>
  `idempotency key ${JSON.stringify(key)} names work order ${workOrderId}, enqueued with a different ${field}`;

type Result<Row> = { row: Row; created: boolean; reused?: KeyReuse };

/** Each order's row (created now, or found under its key), whether this call created it, and how a key was reused. */
async function insertAll<Row extends Brief>(
  db: Queryable,
  { params, keys, keyed }: Statement,
  sql: string,
  bySql: string,
  attempts = VANISHED_ATTEMPTS,
): Promise<Result<Row>[]> {
  const created = await db.query<Row>(sql, params);
  const byKey = new Map(created.filter((c) => c.idempotency_key !== null).map((c) => [c.idempotency_key!, c]));
  const taken = [...new Set(keys.filter((key): key is string => key !== undefined && !byKey.has(key)))];
  const found = taken.length > 0 ? await db.query<Row & Requested>(bySql, [taken]) : [];
  const existing = new Map(found.map((row) => [row.idempotency_key!, row]));
  const unkeyed = created.filter((c) => c.idempotency_key === null);
  let nextUnkeyed = 0;
  const fresh = new Set(created);
  /** The order that created a key's row in this call: a repeat within it is compared with that one. */
  const creator = new Map<string, number>();
  const asked = (i: number) => requested(keyed!.orders[i]!);
  const results: (Result<Row> | undefined)[] = keys.map((key, i) => {
    if (key === undefined) return { row: unkeyed[nextUnkeyed++]!, created: true };
    const row = byKey.get(key) ?? existing.get(key);
    if (!row) return undefined;
    if (fresh.delete(row)) {
      creator.set(key, i);
      return { row, created: true };
    }
    const field = firstDifference(asked(i), existing.get(key) ?? asked(creator.get(key)!));
    return { row, created: false, ...(field && { reused: { field, key, workOrderId: row.id } }) };
  });
  // Retention deleted a key's work order between the two statements: the key is free again.
  const vanished = results.flatMap((result, i) => (result === undefined ? [i] : []));
  if (vanished.length > 0) {
    if (attempts === 1) throw new Error("work orders kept vanishing while their idempotency keys were looked up");
    const again = statement(
      vanished.map((i) => keyed!.orders[i]!),
      vanished.map((i) => keyed!.claimFor[i]),
    );
    const inserted = await insertAll<Row>(db, again, sql, bySql, attempts - 1);
    for (const [n, i] of vanished.entries()) results[i] = inserted[n];
  }
  return results.map((result) => result!);
}

/** `reused` by the index of the order (in the call) whose key named a work order asked for otherwise. */
export type InsertedMany = { ids: string[]; created: Enqueued[]; reused: Map<number, KeyReuse> };

/** Inserts the work orders; `ids` answers each one in the order given (an existing one for a repeated key). */
export function workOrderInsertMany(db: Queryable, orders: WorkOrderCreate[]): Promise<InsertedMany> {
  const keyed = orders.some((o) => o.idempotencyKey !== undefined);
  const inserting = insertAll<Brief>(db, statement(orders), keyed ? INSERT_BRIEF_KEYED : INSERT_BRIEF, BRIEF_BY_KEYS);
  return answer(inserting, orders.map((o) => o.selector), orders.map((o) => o.agent ?? null));
}

/** The ids, and what a wake-up needs of each order created: kept apart from the orders, which may go. */
async function answer(inserting: Promise<Result<Brief>[]>, selectors: Selector[], agents: (string | null)[]): Promise<InsertedMany> {
  const results = await inserting;
  return {
    ids: results.map((r) => r.row.id),
    created: results.flatMap(({ row, created }, i) => (created ? [{ id: row.id, selector: selectors[i]!, targetAgent: agents[i]! }] : [])),
    reused: new Map(results.flatMap(({ reused }, i) => (reused ? [[i, reused] as const] : []))),
  };
}

/** Undoes a chunked insert: the order at `index` has a key that names a work order asked for otherwise. */
export class KeyReused extends Error {
  constructor(
    readonly index: number,
    readonly reuse: KeyReuse,
  ) {
    super(describeReuse(reuse));
    this.name = "KeyReused";
  }
}

/** Work orders per statement of a chunked insert. */
export const INSERT_CHUNK = 1000;

/** The SQLSTATE of a transaction Postgres aborted to break a deadlock. */
const DEADLOCK = "40P01";
const DEADLOCK_ATTEMPTS = 3;

/**
 * Inserts `count` work orders in one transaction, a statement per chunk of `INSERT_CHUNK` (and one
 * more for the rows keys already named: never committed without the others, nor unanswered). Each
 * chunk is asked of `chunk` (which may throw, undoing all) only once the statement before it is on
 * its way, so the caller's work on it overlaps the database's on the ones before. An order whose
 * key names a work order asked for otherwise undoes all (`KeyReused`). A transaction aborted by a
 * deadlock runs again, asking for its chunks anew.
 */
export async function workOrderInsertChunked(
  db: Database,
  count: number,
  chunk: (from: number, to: number) => WorkOrderCreate[] | Promise<WorkOrderCreate[]>,
): Promise<Omit<InsertedMany, "reused">> {
  const inTransaction = async (tx: Queryable) => {
    const inserts: Promise<InsertedMany>[] = [];
    for (let from = 0; from < count; from += INSERT_CHUNK) {
      // postgres-js writes what was queried in a turn when the turn ends.
      if (from > 0) await setImmediate();
      const insert = workOrderInsertMany(tx, await chunk(from, Math.min(count, from + INSERT_CHUNK)));
      // Awaited below, after the chunks still to come: a failure meanwhile is not unhandled.
      insert.catch(() => {});
      inserts.push(insert);
    }
    const results = await Promise.all(inserts);
    for (const [n, { reused }] of results.entries()) {
      const [first] = reused;
      if (first) throw new KeyReused(n * INSERT_CHUNK + first[0], first[1]);
    }
    return { ids: results.flatMap((r) => r.ids), created: results.flatMap((r) => r.created) };
  };
  return retryingDeadlocks(() => db.transaction(inTransaction));
}

/**
 * Runs `transaction` again if Postgres aborted it to break a deadlock: two inserts that share
 * idempotency keys in different orders (a bulk takes them in the order given, a batch of single
 * enqueues in key order) each wait for a row the other holds, and after its deadlock_timeout
 * Postgres aborts one, whichever, which may then succeed.
 */
async function retryingDeadlocks<T>(transaction: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await transaction();
    } catch (error) {
      if (attempt === DEADLOCK_ATTEMPTS || (error as { code?: unknown }).code !== DEADLOCK) throw error;
    }
  }
}

export type Inserted = Result<WorkOrderRow>;

/**
 * Inserts the work orders, answering each with its whole row; one created with an agent in
 * `claimFor` (by index, the agent's id) is claimed for it. Orders with keys take a second
 * statement to find the rows their keys already named, so they go in a transaction: the insert must
 * not commit without an answer, or a retry would insert the unkeyed ones again. Both go under a
 * generic plan: Postgres planned a lone order's insert afresh at every call, its custom plan priced
 * below the generic one's unknown row count, and the plan took 0.45-1.1 ms of the 0.7-1.5 an idle
 * server spent on it.
 */
export function workOrderInsertRows(db: Database, orders: WorkOrderCreate[], claimFor: (string | undefined)[] = []): Promise<Inserted[]> {
  const insert = (q: Queryable) => insertAll<WorkOrderRow>(q, statement(orders, claimFor), INSERT_CLAIMED, ROWS_BY_KEYS);
  return orders.some((o) => o.idempotencyKey !== undefined) ? retryingDeadlocks(() => db.generic.transaction(insert)) : insert(db.generic);
}
