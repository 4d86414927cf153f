// The reaper's passes stand alone: one that fails does not hold back what the others committed.
// Its retention pass deletes what outlived the retention, and keeps everything when it is 0.
import { expect, it, vi } from "vitest";
import { Bus, type Enqueued } from "../../coordinator/bus.ts";
import type { Database } from "../../coordinator/db/database.ts";
import { Reaper } from "../../coordinator/reaper.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import { cancelAllPending, connectAgent, order, useDatabase, workOrderInsert } from "../store/fixtures.ts";

const db = useDatabase("pglite");

/** The database, but the overdue pass's statement fails, as any statement may. */
const failingOverdue = (inner: Database): Database => ({
  ...inner,
  transaction: (fn) =>
    inner.transaction((tx) =>
      fn({
        query: (text, params) => (text.includes("wo.timeout_seconds + $1") ? Promise.reject(new Error("injected failure")) : tx.query(text, params)),
      }),
    ),
});

it("a job held by an agent gone past its lease goes back to the queue with a wake-up, though a later pass fails", async () => {
  const agent = await connectAgent(db(), "gone");
  const { row } = await workOrderInsert(db(), order({ agent: "gone" }));
  expect(await workOrderClaim(db(), agent, 1)).toHaveLength(1);
  await db().query(`UPDATE agents SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [agent.agentId]);

  const bus = new Bus();
  const woken: Enqueued[] = [];
  const changed: string[] = [];
  bus.on("enqueued", (orders) => woken.push(...orders));
  bus.on("changed", (id) => changed.push(id));
  const errors: unknown[] = [];
  const reaper = new Reaper(failingOverdue(db()), bus, { intervalMs: 10, leaseSeconds: 30, retainDays: 0, onError: (error) => errors.push(error) });
  reaper.start();
  try {
    await vi.waitFor(() => expect(woken.map((o) => o.id)).toEqual([row.id]));
    expect(changed).toContain(row.id);
    expect(errors.length).toBeGreaterThan(0);
    expect((errors[0] as Error).message).toBe("injected failure");
  } finally {
    await reaper.stop();
  }
});

it("deletes work orders ended before the retention, pass after pass, and none while the retention is 0", async () => {
  const { ids } = await workOrderInsertMany(db(), Array.from({ length: 1_200 }, () => order({ selector: "reaper=retention" })));
  const [recent] = (await workOrderInsertMany(db(), [order({ selector: "reaper=retention" })])).ids;
  await cancelAllPending(db());
  await db().query(`UPDATE work_orders SET updated_at = now() - interval '8 days' WHERE id = ANY($1::bigint[])`, [ids]);
  const left = async () => (await db().query<{ id: string }>(`SELECT id::text AS id FROM work_orders WHERE selector_text = 'reaper=retention'`)).map((r) => r.id);

  const run = async (retainDays: number, until: () => Promise<void>) => {
    const errors: unknown[] = [];
    const reaper = new Reaper(db(), new Bus(), { intervalMs: 10, leaseSeconds: 30, retainDays, purgeEveryMs: 60_000, onError: (e) => errors.push(e) });
    reaper.start();
    try {
      await until();
    } finally {
      await reaper.stop();
    }
    expect(errors).toEqual([]);
  };
  await run(0, () => new Promise((resolve) => setTimeout(resolve, 200)));
  expect(await left()).toHaveLength(1_201);
  // More than a pass takes: the next pass follows at the next tick, not a minute later.
  await run(7, () => vi.waitFor(async () => expect(await left()).toEqual([recent])));
});

it("a retention pass that takes long does not hold up the reaping of agents gone past their lease", async () => {
  let purging!: () => void;
  const purgeStarted = new Promise<void>((resolve) => (purging = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  // Held before it is sent (PGlite has one connection, which a statement held in a transaction would keep).
  const slowPurge: Database = {
    ...db(),
    query: async <Row>(text: string, params?: unknown[]) => {
      if (text.includes("DELETE FROM agents")) {
        purging();
        await released;
      }
      return db().query<Row>(text, params);
    },
  };
  const bus = new Bus();
  const woken: Enqueued[] = [];
  bus.on("enqueued", (orders) => woken.push(...orders));
  const errors: unknown[] = [];
  const reaper = new Reaper(slowPurge, bus, { intervalMs: 10, leaseSeconds: 30, retainDays: 7, onError: (error) => errors.push(error) });
  reaper.start();
  try {
    await purgeStarted;
    const agent = await connectAgent(db(), "gone-while-purging");
    const { row } = await workOrderInsert(db(), order({ agent: "gone-while-purging" }));
    expect(await workOrderClaim(db(), agent, 1)).toHaveLength(1);
    await db().query(`UPDATE agents SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [agent.agentId]);
    await vi.waitFor(() => expect(woken.map((o) => o.id)).toContain(row.id));
  } finally {
    release();
    await reaper.stop();
  }
  expect(errors).toEqual([]);
});
