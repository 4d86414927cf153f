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

describePostgres("relay over a real Postgres LISTEN/NOTIFY", () => {
  test("repeated changes of one work order within a gathering window reach the other coordinator once", async () => {
    const url = await createPostgresDatabase();
    const [a, b] = [await openDatabase({ kind: "postgres", url: url.toString() }), await openDatabase({ kind: "postgres", url: url.toString() })];
    const [busA, busB] = [new Bus(), new Bus()];
    const fail = (error: unknown) => expect.unreachable(String(error));
    const relays = [new Relay(busA, a.listener!, () => {}, fail), new Relay(busB, b.listener!, () => {}, fail)];
    try {
      for (const relay of relays) await relay.start();
      const seen: string[] = [];
      busB.on("changed", (id) => seen.push(id));
      for (const id of ["7", "7", "8", "7", "8"]) busA.emit("changed", id);
      await vi.waitFor(() => expect(seen).toEqual(["7", "8"]), { timeout: 5_000 });
      busA.emit("changed", "7");
      await vi.waitFor(() => expect(seen).toEqual(["7", "8", "7"]), { timeout: 5_000 });
    } finally {
      for (const relay of relays) await relay.stop();
      await a.close();
      await b.close();
      await dropPostgresDatabase(url);
    }
  });
});
