import { expect, test } from "vitest";
import { pack } from "../../coordinator/relay.ts";
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
