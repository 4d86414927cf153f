// The batcher's promises: items of one turn share a batch, batches close at their count or weight
// limit and run one at a time (or as many side by side as allowed), and a failing batch is retried
// item by item.
import { expect, test } from "vitest";
import { Batcher } from "../../coordinator/batcher.ts";

function recorder(fail?: (batch: string[]) => boolean) {
  const batches: string[][] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const run = async (batch: string[]) => {
    batches.push(batch);
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    await new Promise((r) => setTimeout(r, 5));
    inFlight--;
    if (fail?.(batch)) throw new Error(`refused ${batch.join(",")}`);
    return batch.map((s) => s.toUpperCase());
  };
  return { run, batches, maxInFlight: () => maxInFlight };
}

test("what is submitted in one turn of the event loop goes as one batch; what comes meanwhile forms the next", async () => {
  const r = recorder();
  const batcher = new Batcher(r.run, { delayMs: 0, maxBatch: 100 });
  const first = ["a", "b", "c"].map((s) => batcher.submit(s));
  await new Promise((resolve) => setImmediate(resolve));
  const second = ["d", "e"].map((s) => batcher.submit(s));
  expect(await Promise.all([...first, ...second])).toEqual(["A", "B", "C", "D", "E"]);
  expect(r.batches).toEqual([["a", "b", "c"], ["d", "e"]]);
  expect(r.maxInFlight()).toBe(1);
});

test("a batch closes at its weight limit, and an item heavier than the limit goes alone", async () => {
  const r = recorder();
  const batcher = new Batcher(r.run, { delayMs: 0, maxBatch: 100, maxWeight: 10, weigh: (s: string) => s.length });
  await Promise.all(["aaaa", "bbbb", "cccc", "dddddddddddddd", "e"].map((s) => batcher.submit(s)));
  expect(r.batches).toEqual([["aaaa", "bbbb", "cccc"], ["dddddddddddddd"], ["e"]]);
});

test("a batch closes at its count limit", async () => {
  const r = recorder();
  const batcher = new Batcher(r.run, { delayMs: 5, maxBatch: 2 });
  await Promise.all(["a", "b", "c", "d", "e"].map((s) => batcher.submit(s)));
  expect(r.batches.map((b) => b.length)).toEqual([2, 2, 1]);
});

test("when a batch fails, its items are run alone: only the bad one is refused", async () => {
  const r = recorder((batch) => batch.includes("bad"));
  const batcher = new Batcher(r.run, { delayMs: 0, maxBatch: 100 });
  const settled = await Promise.allSettled(["x", "bad", "y"].map((s) => batcher.submit(s)));
  expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
  expect(r.batches).toEqual([["x", "bad", "y"], ["x"], ["bad"], ["y"]]);
});

test("with inFlight, that many batches run side by side, and what comes meanwhile waits for one to end", async () => {
  const r = recorder();
  const batcher = new Batcher(r.run, { delayMs: 0, maxBatch: 100, inFlight: 2 });
  const first = batcher.submit("a");
  await new Promise((resolve) => setImmediate(resolve));
  const second = batcher.submit("b");
  await new Promise((resolve) => setImmediate(resolve));
  const rest = ["c", "d"].map((s) => batcher.submit(s));
  await new Promise((resolve) => setImmediate(resolve));
  expect(r.batches).toEqual([["a"], ["b"]]);
  await batcher.drain();
  expect(r.batches).toEqual([["a"], ["b"], ["c", "d"]]);
  expect(await Promise.all([first, second, ...rest])).toEqual(["A", "B", "C", "D"]);
  expect(r.maxInFlight()).toBe(2);
});
