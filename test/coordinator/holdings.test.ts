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
  expect(h.settled("a", true)).toBe(0);
  expect(h.settled("a", true)).toBe(0);
  h.assigned(["d"]);
  for (const id of ["b", "c"]) {
    expect(h.finished(id)).toBe(1);
    expect(h.settled(id, true)).toBe(0);
  }
  expect(h.finished("d")).toBe(0);
});

test("once a finish was not applied, finishes free their slots only once applied", () => {
  const h = new Holdings(2);
  expect(h.claim(2)).toBe(2);
  h.assigned(["a", "b"]);
  expect(h.claim(2)).toBe(0);
  expect(h.finished("a")).toBe(1);
  expect(h.finished("b")).toBe(1);
  expect(h.settled("a", false)).toBe(0);
  expect(h.settled("b", true)).toBe(0);
  h.assigned(["c"]);
  expect(h.finished("c")).toBe(0);
  expect(h.settled("c", true)).toBe(0);
  expect(h.claim(1)).toBe(0);
  expect(h.finished("a")).toBe(0);
  expect(h.settled("a", true)).toBe(1);
});

test("finishes not applied, sent for every job at once round after round, win one job each of the first round at most", () => {
  const h = new Holdings(1);
  let next = 0;
  const held = new Set<string>();
  const deal = (slots: number) => {
    for (let i = 0; i < slots; i++) held.add(String(next++));
    h.assigned([...held].slice(held.size - slots));
  };
  deal(h.claim(1));
  for (let round = 0; round < 10; round++) {
    const finishing = [...held];
    for (const id of finishing) deal(h.finished(id));
    deal(h.claim(1));
    for (const id of finishing) deal(h.settled(id, false));
    expect(held.size).toBeLessThanOrEqual(2);
  }
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
  expect([h.finished("a"), h.settled("a", true), h.finished("b"), h.settled("b", true), h.finished("c")]).toEqual([0, 0, 0, 0, 1]);
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

test("a finish sent again while the first copy is answered settles after it, so the slot comes back whichever copy is applied", () => {
  for (const firstApplied of [false, true]) {
    const h = new Holdings(1);
    expect(h.claim(1)).toBe(1);
    h.assigned(["a"]);
    expect(h.claim(1)).toBe(0);
    expect(h.finishing("a")).toBe(true);
    expect(h.finished("a")).toBe(1);
    h.assigned(["b"]);
    expect(h.finishing("a")).toBe(true);
    expect(h.finished("a")).toBe(0);
    expect(h.settled("a", firstApplied)).toBe(0);
    expect(h.settled("a", true)).toBe(0);
    expect(h.finishing("a")).toBe(false);
    expect([h.finished("b"), h.settled("b", true)]).toEqual([0, 0]);
    expect(h.claim(1)).toBe(1);
  }
});

test("whatever an agent sends, what it runs and may still be given passes the limit by one job at most for each refused finish read before the first was answered, and every slot comes back once its jobs have ended", () => {
  type Op =
    | { kind: "claim"; slots: number }
    | { kind: "assign" }
    | { kind: "finish"; pick: number; applies: boolean }
    | { kind: "settle" }
    | { kind: "drain" };
  const op = fc.oneof(
    fc.record({ kind: fc.constant("claim" as const), slots: fc.integer({ min: 1, max: 6 }) }),
    fc.record({ kind: fc.constant("assign" as const) }),
    fc.record({ kind: fc.constant("finish" as const), pick: fc.nat(), applies: fc.boolean() }),
    fc.record({ kind: fc.constant("settle" as const) }),
    fc.record({ kind: fc.constant("drain" as const) }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 5 }), fc.array(op, { maxLength: 80 }), (limit, ops: Op[]) => {
      const h = new Holdings(limit);
      /** Jobs not ended in the database; finishes read and not yet answered, answered in order as the session's are. */
      const running: string[] = [];
      const pending: { id: string; applies: boolean; counts: boolean; early: boolean }[] = [];
      let open = 0;
      let next = 0;
      /** Set once a refused finish freed early is answered, as the session's own. */
      let wary = false;
      let refusedEarly = 0;
      // Any job the agent was given may be finished again, ended or not, while an earlier copy is answered.
      const read = (id: string, applies: boolean) => {
        const counts = h.finishing(id);
        const early = counts && !wary && !pending.some((p) => p.id === id && p.early);
        if (early && !applies) refusedEarly++;
        pending.push({ id, applies, counts, early });
        if (counts) open += h.finished(id);
      };
      const settle = () => {
        const { id, applies, counts, early } = pending.shift()!;
        const runs = running.includes(id);
        if (runs && applies) running.splice(running.indexOf(id), 1);
        const ended = !running.includes(id);
        wary ||= early && !ended;
        if (counts) open += h.settled(id, ended);
      };
      for (const o of ops) {
        if (o.kind === "claim") open += h.claim(o.slots);
        if (o.kind === "assign" && open > 0) {
          const id = String(next++);
          h.assigned([id]);
          running.push(id);
          open--;
        }
        if (o.kind === "finish" && next > 0) read(String(o.pick % next), o.applies);
        if (o.kind === "settle" && pending.length > 0) settle();
        if (o.kind === "drain") {
          h.drain();
          open = 0;
        }
        // A job whose finish will be applied has ended on the agent: it sent it.
        const runs = running.filter((id) => !pending.some((p) => p.id === id && p.applies));
        expect(runs.length + open).toBeLessThanOrEqual(limit + refusedEarly);
      }
      while (pending.length > 0) settle();
      for (const id of [...running]) {
        read(id, true);
        settle();
      }
      expect(h.claim(limit)).toBe(limit - open);
    }),
    { numRuns: 1000 },
  );
});
