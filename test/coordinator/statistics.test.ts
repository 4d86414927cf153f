// After a burst of enqueues the coordinator refreshes the work-order table's statistics itself,
// at most once per interval, rather than wait for autovacuum.
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import { type Database, openDatabase } from "../../coordinator/db/database.ts";
import { Statistics } from "../../coordinator/statistics.ts";
import { order, workOrderInsert } from "../store/fixtures.ts";

let db: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
});

afterAll(async () => db?.close());

/** The planner's row count for work_orders: -1 until the table is first analyzed. */
async function plannerRows(): Promise<number> {
  const [row] = await db.query<{ n: number }>(`SELECT reltuples::int AS n FROM pg_class WHERE relname = 'work_orders'`);
  return row!.n;
}

async function burst(bus: Bus, n: number): Promise<void> {
  const orders = [];
  for (let i = 0; i < n; i++) {
    const { row } = await workOrderInsert(db, order());
    orders.push({ id: row.id, selector: row.selector, targetAgent: row.target_agent });
  }
  bus.emit("enqueued", orders);
}

test("enqueues below the threshold leave the statistics alone; reaching it refreshes them once per interval", async () => {
  const bus = new Bus();
  const fail = (error: unknown) => expect.unreachable(String(error));
  const statistics = new Statistics(db, bus, fail, { threshold: 10, minIntervalMs: 60_000 });
  await burst(bus, 9);
  await statistics.stop();
  expect(await plannerRows()).toBe(-1);

  const again = new Statistics(db, bus, fail, { threshold: 10, minIntervalMs: 60_000 });
  await burst(bus, 10);
  await new Promise((r) => setImmediate(r));
  await burst(bus, 15);
  await again.stop();
  // Analyzed after the first ten (19 rows by then), not after the next fifteen: the interval holds.
  expect(await plannerRows()).toBe(19);
});

test("rows that come within the interval are analyzed when it ends, not left for autovacuum", async () => {
  const bus = new Bus();
  const statistics = new Statistics(db, bus, (error) => expect.unreachable(String(error)), { threshold: 10, minIntervalMs: 300 });
  try {
    await burst(bus, 10);
    await vi.waitFor(async () => expect(await plannerRows()).toBeGreaterThanOrEqual(10));
    const seen = await plannerRows();
    await burst(bus, 20);
    await vi.waitFor(async () => expect(await plannerRows()).toBe(seen + 20), { timeout: 5000 });
  } finally {
    await statistics.stop();
  }
});
