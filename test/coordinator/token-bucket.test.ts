// Token buckets: `take` charges every message, into debt, `tryTake` only what it lets through; and
// a bounded map of them, one per key.
import { describe, expect, it } from "vitest";
import { RateLimits } from "../../coordinator/rate/rate-limits.ts";
import { TokenBucket } from "../../coordinator/rate/token-bucket.ts";

it("lets the burst through, then charges each message beyond it, into debt", () => {
  const bucket = new TokenBucket({ perSecond: 1000, burst: 2000 });
  const started = performance.now();
  for (let i = 0; i < 2000; i++) bucket.take();
  const waits = Array.from({ length: 18_000 }, () => bucket.take());
  // Refilled while this ran: at most what the elapsed time earned.
  const earned = ((performance.now() - started) / 1000) * 1000;
  expect(waits.at(-1)!).toBeGreaterThanOrEqual(18_000 - earned - 1);
  expect(waits.at(-1)!).toBeLessThanOrEqual(18_000);
  expect(waits.every((w, i) => i === 0 || w >= waits[i - 1]! - earned)).toBe(true);
});

it("tryTake charges only what it lets through, and says how long until the next", () => {
  const bucket = new TokenBucket({ perSecond: 2, burst: 3 }, 0);
  expect([0, 0, 0].map(() => bucket.tryTake(0))).toEqual([0, 0, 0]);
  expect(bucket.tryTake(0)).toBe(500);
  expect(bucket.tryTake(100)).toBe(400);
  expect(bucket.wait(100)).toBe(400);
  expect(bucket.tryTake(500)).toBe(0);
  expect(bucket.full(1900)).toBe(false);
  expect(bucket.full(2000)).toBe(true);
});

describe("RateLimits", () => {
  it("keeps a bucket per key", () => {
    const limits = new RateLimits({ perSecond: 1, burst: 1 });
    expect(limits.tryTake("a", 0)).toBe(0);
    expect(limits.tryTake("a", 0)).toBe(1000);
    expect(limits.tryTake("b", 0)).toBe(0);
    expect(limits.wait("c", 0)).toBe(0);
  });

  it("forgets full buckets when it reaches its size, and everything if a flood leaves most of them in use", () => {
    const limits = new RateLimits({ perSecond: 1, burst: 2 }, 4);
    for (const key of ["a", "b", "c"]) limits.tryTake(key, 0);
    limits.tryTake("d", 900);
    // At 1 s, a-c are full again, but d is not: it is kept, with what it was charged.
    limits.tryTake("e", 1000);
    expect(limits.size).toBe(2);
    expect(limits.tryTake("d", 1000)).toBe(0);
    expect(limits.tryTake("d", 1000)).toBeGreaterThan(0);
    for (const key of ["f", "g"]) limits.tryTake(key, 1000);
    limits.tryTake("h", 1000);
    expect(limits.size).toBe(1);
  });
});
