// Bulk insertion on both databases: one statement, ids in the order given, keys resolved once; and
// chunked, a statement per chunk in one transaction that nothing survives if any chunk fails.
import { setImmediate } from "node:timers/promises";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { expect, it } from "vitest";
import type { Queryable } from "../../coordinator/db/database.ts";
import type { WorkOrderCreate } from "../../protocol/api.ts";
import { INSERT_CHUNK, KeyReused, workOrderInsertChunked, workOrderInsertMany, workOrderInsertRows } from "../../coordinator/sql/work-order-insert.ts";
import { workOrderEvents } from "../../coordinator/sql/work-order-read.ts";
import { formatSelector } from "../../protocol/selector.ts";
import { describePostgres, forEachDatabase } from "../support/databases.ts";
import { eventsOf, order, useDatabase } from "./fixtures.ts";

// The collector, to see what a statement in flight keeps alive.
setFlagsFromString("--expose-gc");

forEachDatabase("workOrderInsertMany", (kind) => {
  const db = useDatabase(kind);

  it("inserts in the order given, each one's events beginning pending, and resolves repeated keys", async () => {
    const orders = [
      order({ priority: 5, selector: "arch in (arm64,amd64)" }),
      order({ idempotencyKey: "many-1", retryOn: ["failed"] }),
      order({ idempotencyKey: "many-1", retryOn: ["failed"] }),
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

    const again = await workOrderInsertMany(db(), [order({ idempotencyKey: "many-1", retryOn: ["failed"] })]);
    expect(again).toEqual({ ids: [ids[1]], created: [], reused: new Map() });
  });

  it("reports a repeated key asking for another work order, against the stored one or an earlier order in the call", async () => {
    const spec = { command: ["make", "test"], env: { A: "1", B: "2" } };
    const [first] = (await workOrderInsertMany(db(), [order({ idempotencyKey: "reuse-1", spec, metadata: { x: 1, y: [1, 2] }, retryOn: ["failed", "lost"] })])).ids;
    const { ids, reused } = await workOrderInsertMany(db(), [
      // The same request: documents in another key order, retries in another order.
      order({ idempotencyKey: "reuse-1", spec: { env: { B: "2", A: "1" }, command: ["make", "test"] }, metadata: { y: [1, 2], x: 1 }, retryOn: ["lost", "failed", "lost"] }),
      order({ idempotencyKey: "reuse-1", spec, metadata: { x: 1, y: [1, 2] }, retryOn: ["failed", "lost"], priority: 4 }),
      order({ idempotencyKey: "reuse-2", selector: "os=linux" }),
      order({ idempotencyKey: "reuse-2", selector: "os=linux", metadata: { note: "other" } }),
      order({ idempotencyKey: "reuse-2", selector: "os = linux" }),
    ]);
    expect(ids.slice(0, 2)).toEqual([first, first]);
    expect([...reused]).toEqual([
      [1, { field: "priority", key: "reuse-1", workOrderId: first }],
      [3, { field: "metadata", key: "reuse-2", workOrderId: ids[2] }],
    ]);
  });

  it("writes each order's own selector and retries, though orders that repeat them share what is written", async () => {
    const selectors = ["os=linux", "os=linux,gpu", ""];
    const retries = [["failed"], ["lost", "timed_out"], undefined];
    const orders = Array.from({ length: 12 }, (_, i) => order({ selector: selectors[i % 3], ...(retries[i % 4 % 3] && { retryOn: retries[i % 4 % 3] }) }));
    const { ids } = await workOrderInsertMany(db(), orders);
    const rows = await db().query<{ retry_on: string[]; selector_text: string; selector: unknown }>(
      `SELECT retry_on, selector_text, selector FROM work_orders WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [ids],
    );
    expect(rows.map((r) => [r.selector_text, r.selector, r.retry_on])).toEqual(orders.map((o) => [formatSelector(o.selector), o.selector, o.retryOn]));
    expect(new Set(rows.map((r) => JSON.stringify([r.selector_text, r.retry_on]))).size).toBe(9);
  });

  it("stores orders that differ in their keys alone, sent once as templates, as it stores each sent on its own", async () => {
    const kinds = [
      order({ selector: "os=linux", labels: { team: "web" }, metadata: { shard: [1, 2] }, priority: 3, timeoutSeconds: 60 }),
      order({ agent: "builder-7", spec: { command: ["make"], env: { A: "1" } }, maxAttempts: 3, retryOn: ["failed"], retryBackoffSeconds: 5 }),
      order({ selector: "gpu", queueTimeoutSeconds: 30, adapter: "exec" }),
    ];
    const orders = Array.from({ length: 9 }, (_, i) => ({ ...kinds[i % 3]!, ...(i % 2 === 0 && { idempotencyKey: `template-${i}` }) }));
    const statements: string[] = [];
    const recording: Queryable = { query: (text, params) => (statements.push(text), db().query(text, params)) };
    const together = (await workOrderInsertMany(recording, orders)).ids;
    const alone = [];
    for (const [i, o] of orders.entries()) alone.push(...(await workOrderInsertMany(recording, [{ ...o, idempotencyKey: `alone-${i}` }])).ids);
    expect(statements.filter((text) => text.includes("template AS")).length).toBe(1);
    const stored = async (ids: string[]) =>
      (await db().query<Record<string, unknown>>(`SELECT * FROM work_orders WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids])).map(
        ({ id: _, idempotency_key: __, created_at: ___, updated_at: ____, run_after: _____, ...columns }) => columns,
      );
    expect(await stored(together)).toEqual(await stored(alone));
    expect((await stored(together)).map((row) => row.target_agent)).toEqual(orders.map((o) => o.agent ?? null));

    // Where most orders differ, they go a row each: templates would cost more than they save.
    const mostlyDistinct = Array.from({ length: 100 }, (_, i) => order({ metadata: { shard: i % 70 } }));
    const { ids } = await workOrderInsertMany(recording, mostlyDistinct);
    expect(statements.filter((text) => text.includes("template AS")).length).toBe(1);
    expect((await stored(ids)).map((row) => row.metadata)).toEqual(mostlyDistinct.map((o) => o.metadata));
  });

  it("inserts anew a key whose work order was deleted between the insert and the look-up", async () => {
    const { ids: old } = await workOrderInsertMany(db(), [order({ idempotencyKey: "vanish-1" }), order({ idempotencyKey: "vanish-2" })]);
    // Retention's delete lands right after the insert met the key.
    let inserts = 0;
    const racing: Queryable = {
      query: async <T,>(text: string, params?: unknown[]) => {
        const rows = await db().query<T>(text, params);
        if (++inserts === 1) await db().query(`DELETE FROM work_orders WHERE idempotency_key = 'vanish-1'`);
        return rows;
      },
    };
    const orders = [order({ idempotencyKey: "vanish-1" }), order({}), order({ idempotencyKey: "vanish-2" }), order({ idempotencyKey: "vanish-1" })];
    const { ids, created } = await workOrderInsertMany(racing, orders);
    expect(ids[2]).toBe(old[1]);
    expect(ids[3]).toBe(ids[0]);
    expect(ids[0]).not.toBe(old[0]);
    expect(created.map((c) => c.id).sort()).toEqual([ids[0], ids[1]].sort());
    const [row] = await db().query<{ id: string }>(`SELECT id::text AS id FROM work_orders WHERE idempotency_key = 'vanish-1'`);
    expect(row?.id).toBe(ids[0]);
  });

  it("lets go of unkeyed orders while their statement runs, and keeps keyed ones to insert again", async () => {
    // A bulk request's chunks are in flight together: orders held by each outlived collections.
    const gc = runInNewContext("gc") as () => void;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let sent!: () => void;
    const sending = new Promise<void>((resolve) => (sent = resolve));
    const holding: Queryable = {
      query: async <T,>(text: string, params?: unknown[]) => {
        sent();
        await held;
        return db().query<T>(text, params);
      },
    };
    const track = (orders: WorkOrderCreate[]) => orders.map((o) => new WeakRef(o.spec as object));
    const insert = (orders: WorkOrderCreate[]) => workOrderInsertMany(holding, orders);
    const unkeyed = [order(), order({ selector: "os=linux" })];
    const keyed = [order({ idempotencyKey: "held-1" }), order()];
    const [unkeyedSpecs, keyedSpecs] = [track(unkeyed), track(keyed)];
    const inserts = [insert(unkeyed.splice(0)), insert(keyed.splice(0))] as const;
    await sending;
    await setImmediate();
    gc();
    expect(unkeyedSpecs.map((spec) => spec.deref())).toEqual([undefined, undefined]);
    expect(keyedSpecs.every((spec) => spec.deref() !== undefined)).toBe(true);
    release();
    const [first, second] = await Promise.all(inserts);
    expect(first.created.map((c) => formatSelector(c.selector!))).toEqual(["", "os=linux"]);
    expect(second.ids).toHaveLength(2);
  });

  it("stores every field as given, whatever its text holds", async () => {
    const awkward = ['a"b', "back\\slash", "c,d", "{e}", "NULL", "", " spaced ", "ünï €😀", "line\nbreak", "'quote'"];
    const orders = awkward.map((text, i) =>
      order({
        spec: { command: ["sh", "-c", text], env: { VALUE: text } },
        labels: { n: String(i) },
        metadata: { [text]: text, nested: [{ text }, null, 1.5, true] },
        idempotencyKey: `key-${text}`,
        priority: 3 - i,
        timeoutSeconds: i % 2 ? 60 : undefined,
        queueTimeoutSeconds: i % 3 ? undefined : 5,
        retryOn: i % 2 ? ["failed", "timed_out"] : [],
        ...(i % 2 ? { agent: "builder-1" } : { selector: "os in (linux,darwin),!gpu" }),
      }),
    );
    const { ids } = await workOrderInsertMany(db(), orders);
    const rows = await db().query<Record<string, unknown>>(
      `SELECT spec, labels, metadata, idempotency_key, priority, timeout_seconds, queue_timeout_seconds, retry_on, target_agent, selector, selector_text
       FROM work_orders WHERE id = ANY($1::bigint[]) ORDER BY id`,
      [ids],
    );
    expect(rows).toEqual(
      orders.map((o) => ({
        spec: o.spec,
        labels: o.labels,
        metadata: o.metadata,
        idempotency_key: o.idempotencyKey,
        priority: o.priority,
        timeout_seconds: o.timeoutSeconds ?? null,
        queue_timeout_seconds: o.queueTimeoutSeconds ?? null,
        retry_on: o.retryOn,
        target_agent: o.agent ?? null,
        selector: o.selector,
        selector_text: formatSelector(o.selector),
      })),
    );
  });

  it("writes no event for a creation: the events begin with it once, written by an older version or not", async () => {
    const { ids, created } = await workOrderInsertMany(db(), [order(), order({ agent: "builder-9" })]);
    expect(created.map((c) => c.targetAgent)).toEqual([null, "builder-9"]);
    const written = await db().query<{ n: number }>(`SELECT count(*)::int AS n FROM work_order_events WHERE work_order_id = ANY($1::bigint[])`, [ids]);
    expect(written[0]!.n).toBe(0);
    // As versions before this one wrote it, in the insert's transaction: the same time as the row's.
    await db().query(`INSERT INTO work_order_events (work_order_id, to_state, created_at) SELECT id, 'pending', created_at FROM work_orders WHERE id = $1`, [ids[1]]);
    for (const id of ids) {
      const events = await workOrderEvents(db(), id);
      const [row] = await db().query<{ created_at: Date | string }>(`SELECT created_at FROM work_orders WHERE id = $1`, [id]);
      expect(events).toEqual([{ at: row!.created_at, job_id: null, from_state: null, to_state: "pending", reason: null }]);
    }
  });

  const count = async () => (await db().query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders`))[0]!.n;

  it("chunked: ids in the order given across chunks, a key repeated in a later chunk resolving to the first", async () => {
    const total = INSERT_CHUNK * 2 + 5;
    const orders = Array.from({ length: total }, (_, i) => order(i === 3 || i === total - 2 ? { priority: 3, idempotencyKey: "chunks-1" } : { priority: i % 7 }));
    const asked: [number, number][] = [];
    const { ids, created } = await workOrderInsertChunked(db(), total, (from, to) => (asked.push([from, to]), orders.slice(from, to)));
    expect(asked).toEqual([
      [0, INSERT_CHUNK],
      [INSERT_CHUNK, INSERT_CHUNK * 2],
      [INSERT_CHUNK * 2, total],
    ]);
    expect(ids[total - 2]).toBe(ids[3]);
    expect(created).toHaveLength(total - 1);
    const unique = ids.filter((_, i) => i !== total - 2).map(Number);
    expect(unique).toEqual([...unique].sort((a, b) => a - b));
    const rows = await db().query<{ id: string; priority: number }>(`SELECT id::text AS id, priority FROM work_orders WHERE id = ANY($1::bigint[])`, [ids]);
    const priority = new Map(rows.map((r) => [r.id, r.priority]));
    expect(ids.map((id) => priority.get(id))).toEqual(orders.map((o) => o.priority));
  });

  it("chunked: a key repeated in a later chunk asking for another work order undoes all, naming its place", async () => {
    const total = INSERT_CHUNK * 2 + 5;
    const orders = Array.from({ length: total }, (_, i) => order(i === 3 || i === total - 2 ? { idempotencyKey: "chunks-2", priority: i % 7 } : {}));
    const before = await count();
    const refused = await workOrderInsertChunked(db(), total, (from, to) => orders.slice(from, to)).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(KeyReused);
    expect(refused).toMatchObject({ index: total - 2, reuse: { field: "priority", key: "chunks-2" } });
    expect(await count()).toBe(before);
  });

  it("chunked: a chunk that cannot be prepared undoes the chunks already inserted", async () => {
    const before = await count();
    const refused = new Error("order 1500 is bad");
    const chunk = (from: number, to: number) => {
      if (to > 1500) throw refused;
      return Array.from({ length: to - from }, () => order());
    };
    await expect(workOrderInsertChunked(db(), INSERT_CHUNK * 3, chunk)).rejects.toBe(refused);
    expect(await count()).toBe(before);
  });

  it("chunked: a chunk the database refuses fails the whole, while later chunks are still being prepared", async () => {
    const before = await count();
    // Out of int range: only the database can refuse it, and it does so while later chunks are asked for.
    const bad = { ...order(), priority: 2 ** 40 };
    let asked = 0;
    const chunk = (from: number, to: number) => (asked++, Array.from({ length: to - from }, (_, i) => (from + i === 10 ? bad : order())));
    await expect(workOrderInsertChunked(db(), INSERT_CHUNK * 3, chunk)).rejects.toThrow(/out of range/);
    expect(asked).toBe(3);
    expect(await count()).toBe(before);
  });

  it("chunked: two inserts sharing keys in opposite orders both succeed, each key created once", async () => {
    const total = INSERT_CHUNK * 2;
    const late = INSERT_CHUNK + 500;
    // On Postgres each holds the row of its first key and waits for the other's: a deadlock, broken by retrying.
    const crossed = (first: string, second: string) =>
      Array.from({ length: total }, (_, i) => order(i === 0 ? { idempotencyKey: first } : i === late ? { idempotencyKey: second } : {}));
    const a = crossed("cross-x", "cross-y");
    const b = crossed("cross-y", "cross-x");
    // Both transactions' connections open already, so the two start together.
    await Promise.all([0, 1].map(() => db().transaction((tx) => tx.query("SELECT 1"))));
    const [ra, rb] = await Promise.all([
      workOrderInsertChunked(db(), total, (from, to) => a.slice(from, to)),
      workOrderInsertChunked(db(), total, (from, to) => b.slice(from, to)),
    ]);
    expect([ra.ids[0], ra.ids[late]]).toEqual([rb.ids[late], rb.ids[0]]);
    expect(ra.created.length + rb.created.length).toBe(total * 2 - 2);
  }, 30_000);
});

describePostgres("single enqueues and a bulk sharing keys in opposite orders", () => {
  const db = useDatabase("postgres");

  it("the single enqueues' batch, aborted to break the deadlock, runs again", async () => {
    const total = INSERT_CHUNK * 2;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // The bulk takes y in its first chunk and x in its second, once the batch waits for y.
    const bulk = Array.from({ length: total }, (_, i) => order(i === 0 ? { idempotencyKey: "opposite-y" } : i === INSERT_CHUNK ? { idempotencyKey: "opposite-x" } : {}));
    let chunks = 0;
    const bulkDone = workOrderInsertChunked(db(), total, async (from, to) => {
      if (chunks++ === 1) await gate;
      return bulk.slice(from, to);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    // The batch takes its keys in key order: x, then y, which the bulk holds.
    const batchDone = workOrderInsertRows(db(), [order({ idempotencyKey: "opposite-y" }), order({ idempotencyKey: "opposite-x" })]);
    await new Promise((resolve) => setTimeout(resolve, 200));
    release();
    // The batch began to wait first, so its backend finds the deadlock and aborts it.
    const [inserted, batch] = await Promise.all([bulkDone, batchDone]);
    expect(batch.map((b) => b.row.id)).toEqual([inserted.ids[0], inserted.ids[INSERT_CHUNK]]);
  }, 30_000);
});
