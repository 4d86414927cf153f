// jsonFits answers exactly what writing the document out would: its walk only skips the writing
// for documents far inside the bound.
import { expect, test } from "vitest";
import { jsonFits } from "../../protocol/json-size.ts";

const documents: unknown[] = [
  {},
  [],
  "",
  { command: ["true"], env: {} },
  { a: [1, -1.7976931348623157e308, true, null, "é\u001b\"\\"], "k\u0000ey": { nested: ["😀", "\ud800"] } },
  "\u001b".repeat(10_000),
  { long: "a".repeat(100_000), wide: Array.from({ length: 1000 }, (_, i) => ({ i, s: "ü".repeat(i) })) },
  // Objects that write themselves: a Date is 26 bytes where its own fields are none.
  { at: new Date(0), nested: [new Date(1)] },
];

test.each(documents.map((d) => [Buffer.byteLength(JSON.stringify(d)), d]))("a document of %i bytes fits that, and not one byte less", (bytes, document) => {
  expect(jsonFits(document, bytes)).toBe(true);
  expect(jsonFits(document, bytes - 1)).toBe(false);
});
