// The hub's lower bound on its agents' lease starts, which spares its watchdog a pass over every
// session each second: it must never be later than a lease still held, or an overdue lease would go
// unnoticed and its agent keep hearing from a coordinator that can no longer renew it.
import { expect, test } from "vitest";
import { LeaseFloor } from "../../coordinator/ws/lease-floor.ts";

test("with no agent there is no lease to look at", () => {
  expect(new LeaseFloor().oldest).toBe(Infinity);
});

test("a join lowers it to the joiner's lease; a renewal raises it to the renewal's start", () => {
  const leases = new LeaseFloor();
  leases.joined(1_000);
  leases.joined(900);
  expect(leases.oldest).toBe(900);
  leases.renewed(leases.mark(), 5_000);
  expect(leases.oldest).toBe(5_000);
});

test("a renewal that a session joined during does not raise it: the joiner's lease may be older than the renewal", () => {
  const leases = new LeaseFloor();
  leases.joined(1_000);
  const mark = leases.mark();
  // The hello's lease was set before the renewal began, and it registered while the renewal ran.
  leases.joined(4_000);
  leases.renewed(mark, 5_000);
  expect(leases.oldest).toBeLessThanOrEqual(4_000);
});

test("a renewal that ends after a later one's never lowers it", () => {
  const leases = new LeaseFloor();
  leases.joined(1_000);
  const first = leases.mark();
  const second = leases.mark();
  leases.renewed(second, 6_000);
  leases.renewed(first, 5_000);
  expect(leases.oldest).toBe(6_000);
});

test("a look at every session sets it to the oldest lease left", () => {
  const leases = new LeaseFloor();
  leases.joined(1_000);
  leases.reset(3_000);
  expect(leases.oldest).toBe(3_000);
  leases.reset(Infinity);
  leases.joined(7_000);
  expect(leases.oldest).toBe(7_000);
});
