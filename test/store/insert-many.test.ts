// Bulk insertion on both databases: one statement, ids in the order given, keys resolved once.
import { expect, it } from "vitest";
import { workOrderInsertMany } from "../../coordinator/sql/work-order-insert.ts";
import { forEachDatabase } from "../support/databases.ts";
import { eventsOf, order, useDatabase } from "./fixtures.ts";

forEachDatabase("workOrderInsertMany", (kind) => {
  const db = useDatabase(kind);

  it("inserts in the order given, records each one's pending event, and resolves repeated keys", async () => {
    const orders = [
      order({ priority: 5, selector: "arch in (arm64,amd64)" }),
      order({ idempotencyKey: "many-1", retryOn: ["failed"] }),
      order({ idempotencyKey: "many-1" }),
      order({ labels: { team: "web" }, queueTimeoutSeconds: 60 }),
    ];
    const { ids, created } = await workOrderInsertMany(db(), orders);
    expect(created.map((c) => c.id)).toEqual([ids[0], ids[1], ids[3]]);
    expect(ids[2]).toBe(ids[1]);
    expect(created[0]).toMatchObject({ selector: [{ key: "arch", op: "in", values: ["amd64", "arm64"] }], targetAgent: null });
    const rows = await db().query<{ id: string; priority: number; retry_on: string[]; selector_text: string; queue_timeout_seconds: number | null }>(
      `SELECT id::text AS id, priority, retry_on, selector_text, queue_timeout_seconds FROM work_orders WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [ids],
    );
    expect(rows.map((r) => [r.priority, r.retry_on, r.selector_text, r.queue_timeout_seconds])).toEqual([
      [5, ["lost", "infrastructure"], "arch in (amd64,arm64)", null],
      [0, ["failed"], "", null],
      [0, ["lost", "infrastructure"], "", 60],
    ]);
    for (const id of new Set(ids)) expect((await eventsOf(db(), id)).map((e) => e.to_state)).toEqual(["pending"]);

    const again = await workOrderInsertMany(db(), [order({ idempotencyKey: "many-1" })]);
    expect(again).toEqual({ ids: [ids[1]], created: [] });
  });
});
