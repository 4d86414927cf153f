// Work orders in one statement: the rows travel as a parameter array per column (arrays, not
// json: see array-literal.ts), a bulk chunk's as templates where they repeat, are inserted in the
// order given (ids ascend with it), and repeats of an idempotency key resolve to the existing row.
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
    max_attempts, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds, idempotency_key`;
/** What orders may share: all `COLUMNS` but the key, named and typed as they travel. */
const SHARED = `$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[],
    $9::int[], $10::text[], $11::text[], $12::int[], $13::int[]`;
const SHARED_NAMES = `adapter, spec, selector, selector_text, target_agent, labels, priority, timeout_seconds,
    max_attempts, metadata, retry_on, retry_backoff_seconds, queue_timeout_seconds`;
const SHARED_WIDTH = SHARED_NAMES.split(",").length;
/** The shared columns from their input: the documents travel as text, and each row's `retry_on` as an array literal within. */
const CAST = `adapter, spec::jsonb AS spec, selector::jsonb AS selector, selector_text, target_agent, labels::jsonb AS labels, priority,
    timeout_seconds, max_attempts, metadata::jsonb AS metadata, retry_on::text[] AS retry_on, retry_backoff_seconds, queue_timeout_seconds`;
/** A row per order, every column its own, numbered from 1 in `ord`. */
const ROWS = `unnest(${SHARED}, $14::text[], $15::bigint[]) WITH ORDINALITY
  AS x(${SHARED_NAMES}, idempotency_key, claim_agent, ord)`;

// Orders that differ in their keys alone share a template (`templates()`), whose documents are
// parsed once: a bulk request's orders mostly do, and parsing each order's columns was a third to
// two fifths of Postgres' time in its insert. Where most differ, the rows go as they are: with none shared the join would cost
// 1.1-1.2 times as much.
const TEMPLATE = `template AS MATERIALIZED (
  SELECT ${CAST}, n FROM unnest(${SHARED}) WITH ORDINALITY AS t(${SHARED_NAMES}, n)
)`;
const FROM_TEMPLATES = `unnest($14::int[], $15::text[], $16::bigint[]) WITH ORDINALITY AS r(template, idempotency_key, claim_agent, ord)
  JOIN template x ON x.n = r.template`;

const BRIEF = `wo.id::text AS id, wo.idempotency_key`;

const ON_KEY_CONFLICT = `ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING`;

// Without keys, no conflict clause: with one, Postgres inserts each row speculatively, which costs
// a bulk insert of keyless orders about 5% of its time.
const FROM_ROWS_IN_ORDER = `SELECT ${CAST}, idempotency_key FROM ${ROWS} ORDER BY ord`;
const FROM_TEMPLATES_IN_ORDER = `SELECT ${SHARED_NAMES}, r.idempotency_key FROM ${FROM_TEMPLATES} ORDER BY r.ord`;
const insertBrief = (onConflict: string, templated: boolean) => `
WITH ${templated ? `${TEMPLATE},` : ""} wo AS (
  INSERT INTO work_orders (${COLUMNS})
  ${templated ? FROM_TEMPLATES_IN_ORDER : FROM_ROWS_IN_ORDER}
  ${onConflict}
  RETURNING id, idempotency_key
)
SELECT ${BRIEF} FROM wo ORDER BY wo.id`;
/** By whether some order has a key, then whether they go as templates. */
const INSERT_BRIEF = [false, true].map((keyed) => [false, true].map((templated) => insertBrief(keyed ? ON_KEY_CONFLICT : "", templated)));

// The job ids are drawn with the input, so that each job finds the agent its order was created for.
// Keyed rows go in key order (the unkeyed after them, in the order given): two of these in flight
// at once then wait for each other's keys in one order, and cannot deadlock.
const INSERT_CLAIMED = `
WITH input AS MATERIALIZED (
  SELECT *, CASE WHEN claim_agent IS NOT NULL THEN nextval('jobs_id_seq') END AS job_id
  FROM ${ROWS}
), wo AS (
  INSERT INTO work_orders (${COLUMNS}, state, attempts, latest_job_id)
  SELECT ${CAST}, idempotency_key, CASE WHEN job_id IS NULL THEN 'pending' ELSE 'claimed' END::work_order_state, (job_id IS NOT NULL)::int, job_id
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

/** How a call inserts: its statement for the orders, whether that may take templates, and its look-up of the rows keys name. */
type Insertion = { sql: (s: Statement) => string; templatable: boolean; bySql: string };
const BRIEFLY: Insertion = {
  sql: ({ keyed, templated }) => INSERT_BRIEF[Number(keyed !== undefined)]![Number(templated)]!,
  templatable: true,
  bySql: BRIEF_BY_KEYS,
};
const WHOLLY: Insertion = { sql: () => INSERT_CLAIMED, templatable: false, bySql: ROWS_BY_KEYS };

type Brief = Pick<WorkOrderRow, "id" | "idempotency_key">;

/**
 * Makes each order's shared columns (`SHARED`) as they travel. Orders that repeat a selector's text
 * share its parse, and the retries they take are a short list of names: each is written once a
 * statement. Together they were half of building its input.
 */
function sharedRows(): (order: WorkOrderCreate) => unknown[] {
  const selectors = new Map<WorkOrderCreate["selector"], string>();
  const retries = new Map<string, string>();
  return (o) => [
    o.adapter,
    JSON.stringify(o.spec),
    once(selectors, o.selector, () => JSON.stringify(o.selector)),
    formatSelector(o.selector),
    o.agent,
    JSON.stringify(o.labels),
    o.priority,
    o.timeoutSeconds,
    o.maxAttempts,
    JSON.stringify(o.metadata),
    once(retries, o.retryOn.join(), () => arrayLiteral(o.retryOn)),
    o.retryBackoffSeconds,
    o.queueTimeoutSeconds,
  ];
}

/** The parameters of `SHARED`, each an array literal of a column of `rows`. */
function shared(rows: unknown[][]): string[] {
  // The orders of a bulk request mostly share their documents.
  const quoted: Quoted = new Map();
  return Array.from({ length: SHARED_WIDTH }, (_, column) => arrayLiteral(rows.map((row) => row[column]), quoted));
}

/** Orders looked at before `templates` may judge that too few repeat. */
const TEMPLATE_SAMPLE = 64;

/**
 * The distinct rows, and the number (from 1) of each row's among them; undefined where more than
 * half the rows are distinct, judged as soon as `TEMPLATE_SAMPLE` are in: templates would cost
 * Postgres more than rows, and their keys the coordinator a third more for a chunk's input. Joined
 * with NUL, which no column holds (JSON escapes it; names and selectors are validated), rows are
 * equal only if alike.
 */
function templates(rows: unknown[][]): { distinct: unknown[][]; of: number[] } | undefined {
  const numbers = new Map<string, number>();
  const distinct: unknown[][] = [];
  const of: number[] = [];
  const tooFew = (seen: number) => distinct.length * 2 > seen;
  for (const row of rows) {
    // The new length: the template's number.
    of.push(once(numbers, row.join("\0"), () => distinct.push(row)));
    if (of.length >= TEMPLATE_SAMPLE && tooFew(of.length)) return undefined;
  }
  return tooFew(rows.length) ? undefined : { distinct, of };
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
  /** Its SQL, and the look-up of the rows its keys name. */
  how: Insertion;
  params: string[];
  /** Whether the orders go as templates (`TEMPLATE`), or a row each (`ROWS`). */
  templated: boolean;
  keys: (string | undefined)[];
  /** Only where one has a key: to compare with the work order its key names, and to insert again if that vanished. */
  keyed?: { orders: WorkOrderCreate[]; claimFor: (string | undefined)[] };
};

/** The statement `how` inserts `orders` with: as templates where `how` allows them and the orders repeat. */
function statement(how: Insertion, orders: WorkOrderCreate[], claimFor: (string | undefined)[] = []): Statement {
  const keys = orders.map((o) => o.idempotencyKey);
  const keyed = keys.some((key) => key !== undefined) ? { orders, claimFor } : undefined;
  const perOrder = [arrayLiteral(keys), arrayLiteral(orders.map((_, i) => claimFor[i]))];
  const rows = orders.map(sharedRows());
  const kinds = how.templatable ? templates(rows) : undefined;
  if (kinds) {
    return { how, params: [...shared(kinds.distinct), arrayLiteral(kinds.of), ...perOrder], templated: true, keys, keyed };
  }
  return { how, params: [...shared(rows), ...perOrder], templated: false, keys, keyed };
}

/** A key that names a work order asked for otherwise: `field` is the first that differs. */
export type KeyReuse = { field: string; key: string; workOrderId: string };

export const describeReuse = ({ key, workOrderId, field }: KeyReuse) =>
  `idempotency key ${JSON.stringify(key)} names work order ${workOrderId}, enqueued with a different ${field}`;

type Result<Row> = { row: Row; created: boolean; reused?: KeyReuse };

/** Each order's row (created now, or found under its key), whether this call created it, and how a key was reused. */
async function insertAll<Row extends Brief>(db: Queryable, made: Statement, attempts = VANISHED_ATTEMPTS): Promise<Result<Row>[]> {
  const { how, params, keys, keyed } = made;
  const created = await db.query<Row>(how.sql(made), params);
  const byKey = new Map(created.filter((c) => c.idempotency_key !== null).map((c) => [c.idempotency_key!, c]));
  const taken = [...new Set(keys.filter((key): key is string => key !== undefined && !byKey.has(key)))];
  const found = taken.length > 0 ? await db.query<Row & Requested>(how.bySql, [taken]) : [];
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
      how,
      vanished.map((i) => keyed!.orders[i]!),
      vanished.map((i) => keyed!.claimFor[i]),
    );
    const inserted = await insertAll<Row>(db, again, attempts - 1);
    for (const [n, i] of vanished.entries()) results[i] = inserted[n];
  }
  return results.map((result) => result!);
}

/** `reused` by the index of the order (in the call) whose key named a work order asked for otherwise. */
export type InsertedMany = { ids: string[]; created: Enqueued[]; reused: Map<number, KeyReuse> };

/** Inserts the work orders; `ids` answers each one in the order given (an existing one for a repeated key). */
export function workOrderInsertMany(db: Queryable, orders: WorkOrderCreate[]): Promise<InsertedMany> {
  const inserting = insertAll<Brief>(db, statement(BRIEFLY, orders));
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
  const insert = (q: Queryable) => insertAll<WorkOrderRow>(q, statement(WHOLLY, orders, claimFor));
  return orders.some((o) => o.idempotencyKey !== undefined) ? retryingDeadlocks(() => db.generic.transaction(insert)) : insert(db.generic);
}
