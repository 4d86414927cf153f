// The reaper's passes stand alone: one that fails does not hold back what the others committed.
import { expect, it, vi } from "vitest";
import { Bus, type Enqueued } from "../../coordinator/bus.ts";
import type { Database } from "../../coordinator/db/database.ts";
import { Reaper } from "../../coordinator/reaper.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { connectAgent, order, useDatabase, workOrderInsert } from "../store/fixtures.ts";

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
  const reaper = new Reaper(failingOverdue(db()), bus, { intervalMs: 10, leaseSeconds: 30, onError: (error) => errors.push(error) });
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
