import { expect, test } from "vitest";
import { Backoff } from "../../agent/backoff.ts";

test("delays double up to the cap, each jittered within the upper half of its step", () => {
  const backoff = new Backoff(100, 1000);
  const steps = [100, 200, 400, 800, 1000, 1000];
  for (const step of steps) {
    const delay = backoff.next();
    expect(delay).toBeGreaterThanOrEqual(step / 2);
    expect(delay).toBeLessThanOrEqual(step);
  }
  backoff.reset();
  expect(backoff.next()).toBeLessThanOrEqual(100);
});

test("jitter spreads a fleet: delays for the same attempt differ", () => {
  const delays = new Set(Array.from({ length: 20 }, () => new Backoff(1000, 30_000).next()));
  expect(delays.size).toBeGreaterThan(15);
});
