// Every message is charged: a burst past the allowance is paid for by a pause as long as the excess.
import { expect, it } from "vitest";
import { TokenBucket } from "../../coordinator/ws/rate.ts";

it("lets the burst through, then charges each message beyond it, into debt", () => {
  const bucket = new TokenBucket(1000, 2000);
  const started = performance.now();
  for (let i = 0; i < 2000; i++) bucket.take();
  const waits = Array.from({ length: 18_000 }, () => bucket.take());
  // Refilled while this ran: at most what the elapsed time earned.
  const earned = ((performance.now() - started) / 1000) * 1000;
  expect(waits.at(-1)!).toBeGreaterThanOrEqual(18_000 - earned - 1);
  expect(waits.at(-1)!).toBeLessThanOrEqual(18_000);
  expect(waits.every((w, i) => i === 0 || w >= waits[i - 1]! - earned)).toBe(true);
});
