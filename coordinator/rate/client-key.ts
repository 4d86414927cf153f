// Whom a limit per client address counts. An IPv6 host is given a /64 at the least (RFC 6177), and
// may take any address in it: counted by address, one host could pass every such limit by
// changing its own. So an IPv6 client counts by its /64, an IPv4 one by its address; an
// IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a server listening on `::` sees IPv4 clients)
// counts as its IPv4 address.
import { isIPv4, isIPv6 } from "node:net";

export function clientKey(address: string | undefined): string | undefined {
  if (address === undefined || !isIPv6(address)) return address;
  const groups = hextets(address.replace(/%.*$/, ""));
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) return [groups[6]! >> 8, groups[6]! & 255, groups[7]! >> 8, groups[7]! & 255].join(".");
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address, `::` and a dotted IPv4 tail written out. */
function hextets(address: string): number[] {
  const [head, tail] = address.includes("::") ? address.split("::") : [address, undefined];
  const parts = (text: string | undefined) => (text ? text.split(":").flatMap(part) : []);
  const before = parts(head);
  const after = parts(tail);
  return [...before, ...Array<number>(8 - before.length - after.length).fill(0), ...after];
}

function part(text: string): number[] {
  if (!isIPv4(text)) return [parseInt(text, 16)];
  const [a, b, c, d] = text.split(".").map(Number) as [number, number, number, number];
  return [(a << 8) | b, (c << 8) | d];
}
