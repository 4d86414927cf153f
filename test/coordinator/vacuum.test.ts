// The coordinator vacuums its tables where nothing else does (PGlite; a server with autovacuum
// off) once enough work orders changed, and the next run waits for a share of the table to change.
// Vacuumed, a claim no longer walks past the index entries of the work orders claimed before it.
import { beforeAll, expect, test, vi } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import { openDatabase, type Queryable } from "../../coordinator/db/database.ts";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import { workOrdersClaim } from "../../coordinator/sql/work-order-claim.ts";
import { Vacuum, type VacuumOptions, vacuumNeeded } from "../../coordinator/vacuum.ts";
import { forEachDatabase, freshDatabase } from "../support/databases.ts";
import { connectAgent, order, useDatabase } from "../store/fixtures.ts";

const fail = (error: unknown) => expect.unreachable(String(error));

/** One run of a vacuum with `options`: due at the first change, and waited for. */
async function vacuumOnce(db: Queryable, options: Partial<VacuumOptions>, onError: (error: unknown) => void = fail): Promise<void> {
  const bus = new Bus();
  const vacuum = new Vacuum(db, bus, onError, { threshold: 1, ...options });
  bus.emit("changed", "1");
  await vacuum.stop();
}

const vacuumsOf = async (db: Queryable, table: string) =>
  (await db.query<{ n: number }>("SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = $1", [table]))[0]!.n;

/** How old the table's oldest unfrozen transaction id is. */
const ageOf = async (db: Queryable, table: string) =>
  (await db.query<{ age: number }>("SELECT age(relfrozenxid)::int AS age FROM pg_class WHERE oid = $1::regclass", [table]))[0]!.age;

forEachDatabase("vacuum", (kind) => {
  const db = useDatabase(kind);

  /** Pages the pending index's scan reads to find the first pending work order, as a claim's does. */
  async function pagesToFirstPending(): Promise<number> {
    return db().transaction(async (tx) => {
      await tx.query("SET LOCAL enable_seqscan = off");
      await tx.query("SET LOCAL enable_bitmapscan = off");
      const [row] = await tx.query<Record<string, unknown>>(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM work_orders WHERE state = 'pending' ORDER BY priority DESC NULLS LAST, id LIMIT 1",
      );
      const output = Object.values(row!)[0];
      const [{ Plan: plan }] = (typeof output === "string" ? JSON.parse(output) : output) as [{ Plan: Record<string, number> }];
      return plan["Shared Hit Blocks"]! + plan["Shared Read Blocks"]!;
    });
  }

  /** Counts the statements sent through it: a run's first goes as it begins. */
  function counting(): Queryable & { statements: number } {
    const spy = {
      statements: 0,
      query: <Row>(text: string, params?: unknown[]) => {
        spy.statements++;
        return db().query<Row>(text, params);
      },
    };
    return spy;
  }

  const vacuums = (table: string) => vacuumsOf(db(), table);

  test("is needed on PGlite, and on a server whose autovacuum is off", async () => {
    const [server] = await db().query<{ autovacuum: string }>("SHOW autovacuum");
    expect(await vacuumNeeded(db())).toBe(kind === "pglite" || server!.autovacuum === "off");
  });

  // 5,000 work orders, 4,990 of them claimed, not vacuumed before the test of the walk.
  beforeAll(async () => {
    const agent = await connectAgent(db(), "claimer");
    await workOrderInsertMany(db(), Array.from({ length: 5000 }, () => order()));
    for (let claimed = 0; claimed < 4990; ) {
      const want = Math.min(500, 4990 - claimed);
      claimed += (await workOrdersClaim(db(), agent, [{ agentId: agent.agentId, name: agent.name, want }])).length;
    }
  }, 60_000);

  test("a claim after the vacuum reads a few pages, not one for every few hundred work orders claimed before it", async () => {
    await pagesToFirstPending(); // marks the dead entries, as the claims that follow would
    const before = await pagesToFirstPending();

    const bus = new Bus();
    const vacuum = new Vacuum(db(), bus, fail, { threshold: 100, scale: 0, minIntervalMs: 0 });
    bus.emit("changed", "1");
    bus.emit("enqueued", Array.from({ length: 99 }, (_, i) => ({ id: String(i), selector: [], targetAgent: null })));
    await vacuum.stop();

    const after = await pagesToFirstPending();
    expect(before).toBeGreaterThanOrEqual(10);
    expect(after).toBeLessThanOrEqual(4);
  });

  test("runs once the threshold is reached, and next once a share of the table has changed too", async () => {
    const spy = counting();
    const bus = new Bus();
    const vacuum = new Vacuum(spy, bus, fail, { threshold: 10, scale: 0.5, minIntervalMs: 0 });
    const before = await vacuums("work_orders");
    try {
      for (let i = 0; i < 9; i++) bus.emit("changed", "1");
      expect(spy.statements).toBe(0);
      bus.emit("changed", "1");
      expect(spy.statements).toBe(1);
      await vi.waitFor(async () => expect(await vacuums("work_orders")).toBe(before + 1));
      await vi.waitFor(() => expect(spy.statements).toBe(5));
      // Due again after 10 + half the table's rows, as the vacuum estimated them (not always whole:
      // pages it skipped as all-visible are extrapolated).
      const [table] = await db().query<{ n: number }>("SELECT reltuples::float8 AS n FROM pg_class WHERE relname = 'work_orders'");
      expect(table!.n).toBeGreaterThan(4000);
      const due = Math.ceil(10 + table!.n / 2);
      bus.emit("enqueued", Array.from({ length: due - 1 }, (_, i) => ({ id: String(i), selector: [], targetAgent: null })));
      expect(spy.statements).toBe(5);
      bus.emit("changed", "1");
      expect(spy.statements).toBe(6);
    } finally {
      await vacuum.stop();
    }
    expect(await vacuums("work_orders")).toBe(before + 2);
  });

  test("leaves a table under ten pages alone, for the planner to go on taking it for ten at least", async () => {
    await vacuumOnce(db(), { scale: 0, minIntervalMs: 0 });
    expect(await vacuums("jobs")).toBeGreaterThan(0);
    expect(await vacuums("tokens")).toBe(0);
    const [tokens] = await db().query<{ n: number }>("SELECT reltuples::int AS n FROM pg_class WHERE relname = 'tokens'");
    expect(tokens!.n).toBe(-1);
  });

  test("leaves alone a table past ten pages whose rows retention deleted, as it leaves a small one, and freezes it only later", async () => {
    const emptied = await freshDatabase(kind);
    try {
      const agent = await connectAgent(emptied, "emptied");
      await workOrderInsertMany(emptied, Array.from({ length: 3000 }, () => order()));
      for (let claimed = 0; claimed < 3000; ) claimed += (await workOrdersClaim(emptied, agent, [{ ...agent, want: 500 }])).length;
      await emptied.query("DELETE FROM jobs");
      const stats = async () =>
        (await emptied.query<{ pages: number; rows: number }>("SELECT relpages AS pages, reltuples::int AS rows FROM pg_class WHERE relname = 'jobs'"))[0];
      expect(await stats()).toEqual({ pages: 0, rows: -1 });
      const age = (table: string) => ageOf(emptied, table);
      // Old enough to freeze the catalogs, not twice as old as jobs: a table left alone waits for that.
      const freezeAge = Math.ceil((await age("jobs")) * 0.6);
      expect(await age("pg_class")).toBeGreaterThanOrEqual(2 * freezeAge);
      await vacuumOnce(emptied, { freezeAge });
      expect(await vacuumsOf(emptied, "work_orders")).toBeGreaterThanOrEqual(1);
      expect(await age("pg_class")).toBeLessThan(freezeAge);
      // Still never vacuumed, so taken for ten pages at least: not known as empty.
      expect(await stats()).toEqual({ pages: 0, rows: -1 });
    } finally {
      await emptied.close();
    }
  });

  test("freezes every table of the database holding transaction ids that old, the catalogs too", async () => {
    const oldest = async () =>
      (await db().query<{ age: number }>("SELECT max(age(relfrozenxid))::int AS age FROM pg_class WHERE relkind = 'r'"))[0]!.age;
    const before = await oldest();
    const freezeAge = Math.floor(before / 2);
    expect(freezeAge).toBeGreaterThan(5);
    await vacuumOnce(db(), { freezeAge });
    // Those that old are frozen now; the rest may have aged by the few transactions since.
    expect(await oldest()).toBeLessThan(freezeAge + Math.ceil(freezeAge / 2));
  });
});

// On Postgres the coordinator's role may be no superuser. A table it may not vacuum only draws a
// warning, but one named in a schema it has no USAGE on fails the whole statement: the freezing
// must not list it. On PGlite, which lets the test make a role of its own (not the shared server).
test("freezing passes over the tables of a schema the coordinator's role may not use", async () => {
  const db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  try {
    await db.query("CREATE SCHEMA private");
    await db.query("CREATE TABLE private.t (a int)");
    await db.query("CREATE ROLE coordinator");
    for (const table of ["work_orders", "jobs", "work_order_events", "job_logs", "agents", "tokens"]) await db.query(`ALTER TABLE ${table} OWNER TO coordinator`);
    await db.query("SET ROLE coordinator");
    const age = (table: string) => ageOf(db, table);
    for (let i = 0; i < 10; i++) await db.query("SELECT txid_current()");
    // Past jobs' age, doubled as a table left alone: private.t, made before it, is older.
    const freezeAge = Math.floor(((await age("jobs")) - 2) / 2);
    const errors: unknown[] = [];
    await vacuumOnce(db, { freezeAge }, (error) => void errors.push(error));
    expect(errors.map(String)).toEqual([]);
    expect(await age("jobs")).toBeLessThan(freezeAge);
  } finally {
    await db.close();
  }
});
