// Single enqueues from concurrent clients share statements and commits, and still answer each
// client with its own row; one bad order in a batch fails alone.
import { afterAll, beforeAll, expect, test } from "vitest";
import { type Database, openDatabase, type Queryable } from "../../coordinator/db/database.ts";
import { Enqueuer } from "../../coordinator/enqueuer.ts";
import { commits, commitsOverhead, order } from "../store/fixtures.ts";

let db: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
});

afterAll(async () => db?.close());

test("fifty concurrent enqueues share a commit and each gets its own work order back", async () => {
  const enqueuer = new Enqueuer(db);
  const overhead = await commitsOverhead(db);
  const before = await commits(db);
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => enqueuer.enqueue(order({ metadata: { i } }))));
  const used = (await commits(db)) - before - overhead;
  expect(used).toBeLessThanOrEqual(2);
  expect(results.every((r) => r.created && r.row.state === "pending")).toBe(true);
  expect(results.map((r) => r.row.metadata)).toEqual(Array.from({ length: 50 }, (_, i) => ({ i })));
  expect(new Set(results.map((r) => r.row.id)).size).toBe(50);
});

test("one idempotency key sent ten times at once creates one work order; the others find it", async () => {
  const enqueuer = new Enqueuer(db);
  const results = await Promise.all(Array.from({ length: 10 }, () => enqueuer.enqueue(order({ idempotencyKey: "same-key" }))));
  expect(results.filter((r) => r.created)).toHaveLength(1);
  expect(new Set(results.map((r) => r.row.id)).size).toBe(1);
  const [count] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders WHERE idempotency_key = 'same-key'`);
  expect(count!.n).toBe(1);
});

test("an order the database refuses fails alone; the rest of its batch is enqueued", async () => {
  const enqueuer = new Enqueuer(db);
  // jsonb cannot hold a NUL character, so this one order fails inside the shared statement.
  const bad = order({ metadata: { note: "nul \u0000 here" } });
  const settled = await Promise.allSettled([order({ metadata: { n: 1 } }), bad, order({ metadata: { n: 2 } })].map((o) => enqueuer.enqueue(o)));
  expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
});

test("a batch whose key lookup fails commits nothing, so its one-by-one retry makes no duplicate", async () => {
  await db.query(`INSERT INTO work_orders (adapter, spec, selector, selector_text, labels, metadata, idempotency_key) VALUES ('exec', '{}', '[]', '', '{}', '{}', 'taken')`);
  let failures = 1;
  // The lookup of rows that keys already named fails once, after the insert ran.
  const failing = (q: Queryable): Queryable => ({
    query: (text, params) => (text.includes("idempotency_key = ANY") && failures-- > 0 ? Promise.reject(new Error("lookup failed")) : q.query(text, params)),
  });
  const flaky: Database = { ...db, ...failing(db), transaction: (fn) => db.transaction((tx) => fn(failing(tx))) };
  const enqueuer = new Enqueuer(flaky);
  const results = await Promise.all([enqueuer.enqueue(order({ metadata: { lone: "once" } })), enqueuer.enqueue(order({ idempotencyKey: "taken" }))]);
  expect(results.map((r) => r.created)).toEqual([true, false]);
  const [count] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders WHERE metadata = '{"lone":"once"}'`);
  expect(count!.n).toBe(1);
});
