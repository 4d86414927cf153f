// Single enqueues from concurrent clients share statements and commits, and still answer each
// client with its own row; one bad order in a batch fails alone. An order an agent waits for goes
// straight to it.
import { afterAll, beforeAll, expect, test } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import { type Database, openDatabase, type Queryable } from "../../coordinator/db/database.ts";
import { type Claimer, Dispatcher } from "../../coordinator/dispatch/dispatcher.ts";
import { Enqueuer } from "../../coordinator/enqueuer.ts";
import type { Assignment } from "../../protocol/messages.ts";
import { cancelAllPending, commits, commitsOverhead, connectAgent, eventsOf, order } from "../store/fixtures.ts";
import { describePostgres, freshDatabase } from "../support/databases.ts";

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
  const flaky: Database = { ...db, generic: { ...failing(db.generic), transaction: (fn) => db.generic.transaction((tx) => fn(failing(tx))) } };
  const enqueuer = new Enqueuer(flaky);
  const results = await Promise.all([enqueuer.enqueue(order({ metadata: { lone: "once" } })), enqueuer.enqueue(order({ idempotencyKey: "taken" }))]);
  expect(results.map((r) => r.created)).toEqual([true, false]);
  const [count] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders WHERE metadata = '{"lone":"once"}'`);
  expect(count!.n).toBe(1);
});

/** `n` agents of one group, each with one open slot, once the group's first round found nothing. */
async function quietGroup(pool: string, n: number) {
  await cancelAllPending(db);
  let claims = 0;
  const counting: Database = { ...db, generic: { ...db.generic, query: (text, params) => (claims++, db.generic.query(text, params)) } };
  const dispatcher = new Dispatcher(counting, new Bus(), (e) => expect.unreachable(String(e)));
  const agents: (Claimer & { jobs: Assignment[]; resyncs: number })[] = [];
  for (let i = 0; i < n; i++) {
    const claimant = await connectAgent(db, `${pool}-${i}`, { pool });
    const agent = { claimant, jobs: [] as Assignment[], resyncs: 0, assign: (dealt: Assignment[]) => agent.jobs.push(...dealt), resync: () => agent.resyncs++ };
    agents.push(agent);
  }
  for (const agent of agents) dispatcher.claim(agent, 1);
  for (let i = 0; i < 100 && claims === 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 20));
  return { dispatcher, agents, claims: () => claims };
}

test("an order an agent of a quiet group may run is created claimed for the one waiting longest, with no claim round", async () => {
  const { dispatcher, agents, claims } = await quietGroup("quiet", 2);
  const before = claims();
  const enqueuer = new Enqueuer(db, dispatcher);
  const first = await enqueuer.enqueue(order({ selector: "pool=quiet" }));
  expect(first.row.state).toBe("claimed");
  expect(first.row.attempts).toBe(1);
  expect(first.row.latest_job).toMatchObject({ agent: "quiet-0", state: "claimed", attempt: 1 });
  expect(agents[0]!.jobs).toEqual([
    { jobId: first.row.latest_job!.id, workOrderId: first.row.id, attempt: 1, priority: 0, adapter: "exec", spec: first.row.spec, timeoutSeconds: null, adopt: null },
  ]);
  const events = await eventsOf(db, first.row.id);
  expect(events.map((e) => [e.from_state, e.to_state, e.job_id])).toEqual([
    [null, "pending", null],
    ["pending", "claimed", first.row.latest_job!.id],
  ]);
  const second = await enqueuer.enqueue(order({ selector: "pool=quiet" }));
  expect(agents[1]!.jobs.map((j) => j.workOrderId)).toEqual([second.row.id]);
  // No slot left: the next waits in the pool.
  const third = await enqueuer.enqueue(order({ selector: "pool=quiet" }));
  expect(third.row.state).toBe("pending");
  expect(claims()).toBe(before);
  dispatcher.stop();
});

test("a held slot is given back when the order was not created (its key named another) or its insert failed", async () => {
  const { dispatcher, agents } = await quietGroup("held", 2);
  const first = await new Enqueuer(db, dispatcher).enqueue(order({ selector: "pool=held", idempotencyKey: "held-key" }));
  expect(agents[0]!.jobs.map((j) => j.workOrderId)).toEqual([first.row.id]);
  const again = await new Enqueuer(db, dispatcher).enqueue(order({ selector: "pool=held", idempotencyKey: "held-key" }));
  expect(again).toMatchObject({ created: false, row: { id: first.row.id } });

  let failures = 1;
  const query: Queryable["query"] = (text, params) => (text.includes("INSERT INTO work_orders") && failures-- > 0 ? Promise.reject(new Error("insert failed")) : db.generic.query(text, params));
  const failing: Database = { ...db, generic: { ...db.generic, query } };
  await expect(new Enqueuer(failing, dispatcher).enqueue(order({ selector: "pool=held" }))).rejects.toThrow("insert failed");
  // Both times the slot came back: the next order still goes to the second agent.
  const next = await new Enqueuer(db, dispatcher).enqueue(order({ selector: "pool=held" }));
  expect(next.row.state).toBe("claimed");
  expect(agents[1]!.jobs.map((j) => j.workOrderId)).toEqual([next.row.id]);
  expect(agents.map((a) => a.resyncs)).toEqual([0, 0]);
  dispatcher.stop();
});

test("an insert that may have committed unseen has the agent its slot was held on reconnect, to be told of it", async () => {
  const { dispatcher, agents } = await quietGroup("unseen", 1);
  // The statement runs and commits, and then its connection is lost before the answer.
  const query = async <Row,>(text: string, params?: unknown[]) => {
    const rows = await db.generic.query<Row>(text, params);
    if (text.includes("INSERT INTO work_orders")) throw Object.assign(new Error("write CONNECTION_CLOSED"), { code: "CONNECTION_CLOSED" });
    return rows;
  };
  const losing: Database = { ...db, generic: { ...db.generic, query } };
  await expect(new Enqueuer(losing, dispatcher).enqueue(order({ selector: "pool=unseen", metadata: { unseen: true } }))).rejects.toThrow("CONNECTION_CLOSED");
  expect(agents[0]!.resyncs).toBe(1);
  expect(agents[0]!.jobs).toEqual([]);
  const [row] = await db.query<{ state: string }>(`SELECT state FROM work_orders WHERE metadata = '{"unseen":true}'`);
  expect(row!.state).toBe("claimed");
  dispatcher.stop();
});

describePostgres("batches side by side on Postgres", () => {
  test("two batches in flight with the same keys in opposite orders, both held up mid-insert, do not deadlock", async () => {
    const pg = await freshDatabase("postgres");
    try {
      const errors: unknown[] = [];
      const transaction: Database["transaction"] = (fn) => pg.generic.transaction(fn).catch((error: unknown) => (errors.push((error as { code?: string }).code), Promise.reject(error)));
      const watched: Database = { ...pg, generic: { ...pg.generic, transaction } };
      const enqueuer = new Enqueuer(watched);
      // Another session inserts the middle key and holds it uncommitted, so both batches wait there.
      const holding = pg.transaction(async (tx) => {
        await tx.query(`INSERT INTO work_orders (adapter, spec, selector, selector_text, labels, metadata, idempotency_key) VALUES ('exec', '{}', '[]', '', '{}', '{}', 'dl-1')`);
        await new Promise((r) => setTimeout(r, 300));
      });
      await new Promise((r) => setTimeout(r, 50));
      const send = (keys: string[]) => keys.map((key) => enqueuer.enqueue(order({ idempotencyKey: key })));
      const first = send(["dl-0", "dl-1", "dl-2"]);
      await new Promise((resolve) => setImmediate(resolve));
      const second = send(["dl-2", "dl-1", "dl-0"]);
      await holding;
      const [a0, a1, a2, b2, b1, b0] = await Promise.all([...first, ...second]);
      expect(errors).toEqual([]);
      expect([a0!.row.id, a1!.row.id, a2!.row.id]).toEqual([b0!.row.id, b1!.row.id, b2!.row.id]);
      const [count] = await pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders`);
      expect(count!.n).toBe(3);
    } finally {
      await pg.close();
    }
  });

  test("the same keys in two batches in flight at once, in either order, make one work order each; every caller gets it", async () => {
    const pg = await freshDatabase("postgres");
    try {
      let running = 0;
      let most = 0;
      const transaction: Database["transaction"] = async (fn) => {
        most = Math.max(most, ++running);
        try {
          return await pg.generic.transaction(fn);
        } finally {
          running--;
        }
      };
      const counted: Database = { ...pg, generic: { ...pg.generic, transaction } };
      const enqueuer = new Enqueuer(counted);
      const send = (keys: string[]) => keys.map((key) => enqueuer.enqueue(order({ idempotencyKey: key })));
      const first = send(["k1", "k2"]);
      // The next turn: a second batch, while the first is in flight; its keys in the other order.
      await new Promise((resolve) => setImmediate(resolve));
      const second = send(["k2", "k1"]);
      const [a1, a2, b2, b1] = await Promise.all([...first, ...second]);
      expect(most).toBe(2);
      expect([a1!.row.id, a2!.row.id]).toEqual([b1!.row.id, b2!.row.id]);
      expect([a1, a2, b1, b2].filter((r) => r!.created)).toHaveLength(2);
      const [count] = await pg.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders`);
      expect(count!.n).toBe(2);
    } finally {
      await pg.close();
    }
  });
});
