// An agent session's holdings: jobs held plus open claim never pass capacity + prefetch, and a
// claim that overtook the finish freeing its slot is granted when that finish arrives.
import fc from "fast-check";
import { expect, test } from "vitest";
import { Holdings } from "../../coordinator/ws/holdings.ts";

test("grants a claim up to the limit and owes the rest until jobs finish", () => {
  const h = new Holdings(3);
  expect(h.claim(5)).toBe(3);
  h.assigned(["a", "b", "c"]);
  expect(h.claim(1)).toBe(0);
  expect(h.finished("a")).toBe(1);
  expect(h.finished("a")).toBe(0);
  h.assigned(["d"]);
  expect(h.finished("b")).toBe(1);
  expect(h.finished("c")).toBe(1);
  expect(h.finished("d")).toBe(0);
});

test("a claim that overtook the finish of a job listed at the welcome is granted by that finish", () => {
  const h = new Holdings(1);
  h.welcome(["x"]);
  expect(h.claim(1)).toBe(0);
  expect(h.finished("x")).toBe(1);
});

test("jobs listed at a welcome past a limit cut since grant nothing until they are all finished", () => {
  const h = new Holdings(1);
  h.welcome(["a", "b", "c"]);
  expect(h.claim(1)).toBe(0);
  expect([h.finished("a"), h.finished("b"), h.finished("c")]).toEqual([0, 0, 1]);
  expect(h.claim(1)).toBe(0);
});

test("a drain forgets the open claim and what was owed", () => {
  const h = new Holdings(2);
  h.welcome(["y"]);
  expect(h.claim(3)).toBe(1);
  h.drain();
  expect(h.finished("y")).toBe(0);
  expect(h.claim(2)).toBe(2);
});

test("whatever an agent sends, what it holds and may still be given never passes the limit", () => {
  type Op = { kind: "claim"; slots: number } | { kind: "assign" } | { kind: "finish"; pick: number } | { kind: "drain" };
  const op = fc.oneof(
    fc.record({ kind: fc.constant("claim" as const), slots: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ kind: fc.constant("assign" as const) }),
    fc.record({ kind: fc.constant("finish" as const), pick: fc.nat() }),
    fc.record({ kind: fc.constant("drain" as const) }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 5 }), fc.array(op, { maxLength: 60 }), (limit, ops: Op[]) => {
      const h = new Holdings(limit);
      const held: string[] = [];
      let open = 0;
      let next = 0;
      for (const o of ops) {
        if (o.kind === "claim") open += h.claim(o.slots);
        if (o.kind === "assign" && open > 0) {
          const id = String(next++);
          h.assigned([id]);
          held.push(id);
          open--;
        }
        if (o.kind === "finish" && held.length > 0) open += h.finished(held.splice(o.pick % held.length, 1)[0]!);
        if (o.kind === "drain") {
          h.drain();
          open = 0;
        }
        expect(held.length + open).toBeLessThanOrEqual(limit);
      }
    }),
  );
});
