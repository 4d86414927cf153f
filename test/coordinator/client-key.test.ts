// Limits per client address count an IPv6 client by its /64, however it writes its address.
import { expect, it } from "vitest";
import { clientKey } from "../../coordinator/rate/client-key.ts";

it.each([
  ["127.0.0.1", "127.0.0.1"],
  ["::ffff:127.0.0.1", "127.0.0.1"],
  ["::ffff:7f00:1", "127.0.0.1"],
  ["::FFFF:10.1.2.3", "10.1.2.3"],
  ["2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"],
  ["2001:0db8:0001:0002::1", "2001:db8:1:2::/64"],
  ["2001:db8:1:2::", "2001:db8:1:2::/64"],
  ["2001:db8::1", "2001:db8:0:0::/64"],
  ["2001:db8:0:0:1::", "2001:db8:0:0::/64"],
  ["fe80::1%eth0", "fe80:0:0:0::/64"],
  ["::1", "0:0:0:0::/64"],
  ["::", "0:0:0:0::/64"],
  ["64:ff9b::192.0.2.33", "64:ff9b:0:0::/64"],
])("%s counts as %s", (address, key) => {
  expect(clientKey(address)).toBe(key);
});

it("two addresses of one /64 share a key; the next /64 has its own", () => {
  expect(clientKey("2001:db8:1:2::a")).toBe(clientKey("2001:db8:1:2:ffff:ffff:ffff:ffff"));
  expect(clientKey("2001:db8:1:3::a")).not.toBe(clientKey("2001:db8:1:2::a"));
});

it("no address (a request made in-process) stays none", () => {
  expect(clientKey(undefined)).toBeUndefined();
});
