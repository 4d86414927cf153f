import { expect, test, vi } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import { openDatabase } from "../../coordinator/db/database.ts";
import { pack, Relay } from "../../coordinator/relay.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from "../support/databases.ts";
import { parseSelector } from "../../protocol/selector.ts";

test("events are packed into as few notifications as fit under Postgres' 8000-byte limit, none lost", () => {
  const orders = Array.from({ length: 500 }, (_, i) => ({ id: String(i + 1), selector: parseSelector("os=linux,arch in (amd64,arm64)"), targetAgent: null }));
  const changed = Array.from({ length: 300 }, (_, i) => ["changed", [String(i)]] as ["changed", unknown[]]);
  const payloads = pack("me", [["enqueued", [orders]], ...changed]);
  expect(payloads.length).toBeGreaterThan(1);
  for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8000);
  const events = payloads.flatMap((p) => (JSON.parse(p) as { from: string; events: [string, unknown[]][] }).events);
  expect(events.filter(([name]) => name === "enqueued").map(([, [batch]]) => (batch as { id: string }[])[0]!.id)).toEqual(orders.map((o) => o.id));
  expect(events.filter(([name]) => name === "changed")).toEqual(changed);
  expect(payloads.every((p) => JSON.parse(p).from === "me")).toBe(true);
});

test("nothing to send makes no notification", () => {
  expect(pack("me", [])).toEqual([]);
});

/** Two coordinators' relays on one fresh database: what goes on bus A should come out on bus B. */
async function withRelays(run: (busA: Bus, busB: Bus) => Promise<void>): Promise<void> {
  const url = await createPostgresDatabase();
  const [a, b] = [await openDatabase({ kind: "postgres", url: url.toString() }), await openDatabase({ kind: "postgres", url: url.toString() })];
  const [busA, busB] = [new Bus(), new Bus()];
  const fail = (error: unknown) => expect.unreachable(String(error));
  const relays = [new Relay(busA, a.listener!, () => {}, fail), new Relay(busB, b.listener!, () => {}, fail)];
  try {
    for (const relay of relays) await relay.start();
    await run(busA, busB);
  } finally {
    for (const relay of relays) await relay.stop();
    await a.close();
    await b.close();
    await dropPostgresDatabase(url);
  }
}

describePostgres("relay over a real Postgres LISTEN/NOTIFY", () => {
  test("a flush of many notifications arrives whole and in order, free text included", async () => {
    await withRelays(async (busA, busB) => {
      const cancels: unknown[] = [];
      const enqueued: string[] = [];
      busB.on("cancel", (cancel) => cancels.push(cancel));
      busB.on("enqueued", (orders) => enqueued.push(...orders.map((o) => o.id)));
      const reason = `he said "stop" \\ 'now' \u00fcnicode 🎉\n{"not": "json"}`;
      const orders = Array.from({ length: 500 }, (_, i) => ({ id: String(i + 1), selector: parseSelector("os=linux"), targetAgent: null }));
      busA.emit("cancel", { jobId: "1", agentId: "2", reason });
      busA.emit("enqueued", orders);
      await vi.waitFor(() => expect(enqueued).toHaveLength(500), { timeout: 5_000 });
      expect(enqueued).toEqual(orders.map((o) => o.id));
      expect(cancels).toEqual([{ jobId: "1", agentId: "2", reason }]);
    });
  });

  test("repeated changes of one work order within a gathering window reach the other coordinator once", async () => {
    await withRelays(async (busA, busB) => {
      const seen: string[] = [];
      busB.on("changed", (id) => seen.push(id));
      for (const id of ["7", "7", "8", "7", "8"]) busA.emit("changed", id);
      await vi.waitFor(() => expect(seen).toEqual(["7", "8"]), { timeout: 5_000 });
      busA.emit("changed", "7");
      await vi.waitFor(() => expect(seen).toEqual(["7", "8", "7"]), { timeout: 5_000 });
    });
  });
});
