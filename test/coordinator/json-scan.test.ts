// The scan that bounds JSON text before JSON.parse builds it: its count of pieces against one
// worked out from the value, and the items of a body's array cut out whole, whatever their strings hold.
import { describe, expect, it } from "vitest";
import { boundPieces, JsonScanner, scanJson, type JsonLimits, TooComplex } from "../../coordinator/json-scan.ts";

/** Pieces worked out from the value: a container, a colon a key, a comma between two. */
function piecesOf(value: unknown): number {
  if (typeof value !== "object" || value === null) return 0;
  const children = Array.isArray(value) ? value : Object.values(value);
  const keys = Array.isArray(value) ? 0 : children.length;
  return 1 + keys + Math.max(children.length - 1, 0) + children.reduce((n: number, child) => n + piecesOf(child), 0);
}

/** Strings that look like structure, escapes and all. */
const TRICKY = ['{"a":[1,2]}', "\\", '\\"', "a\\\\", "\\\\\\\"", ",:", "]}", "é😀", ""];

function randomValue(random: () => number, depth: number): unknown {
  const pick = random();
  if (depth > 4 || pick < 0.3) return TRICKY[Math.floor(random() * TRICKY.length)];
  if (pick < 0.4) return random() < 0.5 ? null : Math.round(random() * 1000) / 10;
  const n = Math.floor(random() * 4);
  if (pick < 0.7) return Array.from({ length: n }, () => randomValue(random, depth + 1));
  return Object.fromEntries(Array.from({ length: n }, (_, i) => [`${TRICKY[i % TRICKY.length]}${i}`, randomValue(random, depth + 1)]));
}

function seeded(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

const unlimited = { maxPieces: Infinity, items: { maxPieces: Infinity, maxCount: Infinity, maxChars: Infinity } };

describe("scanJson", () => {
  it("counts the pieces of any value, strings that look like structure not among them, however it is spaced", () => {
    const random = seeded(7);
    for (let round = 0; round < 300; round++) {
      const value = randomValue(random, 0);
      for (const text of [JSON.stringify(value), JSON.stringify(value, null, round % 3)]) {
        expect(scanJson(text, { maxPieces: Infinity }).pieces, text).toBe(piecesOf(value));
      }
    }
  });

  it("cuts out each item of the one array a body's object holds, so that parsed apart they are the array", () => {
    const random = seeded(11);
    for (let round = 0; round < 300; round++) {
      const items = Array.from({ length: round % 5 }, () => randomValue(random, 1));
      const body = { before: { inner: randomValue(random, 2) }, items, after: TRICKY[round % TRICKY.length] };
      const text = JSON.stringify(body, null, round % 2 ? 2 : undefined);
      const { pieces, array } = scanJson(text, unlimited);
      expect(array, text).toBeDefined();
      const { open, close, spans } = array!;
      const cut = Array.from({ length: spans.length / 3 }, (_, i) => JSON.parse(text.slice(spans[3 * i], spans[3 * i + 1])));
      expect(cut).toEqual(items);
      expect(Array.from({ length: spans.length / 3 }, (_, i) => spans[3 * i + 2])).toEqual(items.map(piecesOf));
      expect(text[open]).toBe("[");
      expect(text[close]).toBe("]");
      expect(array!.pieces).toBe(piecesOf(items));
      expect(pieces).toBe(piecesOf(body));
    }
  });

  it("finds no array of items in a body with two arrays, or none, or that is not an object", () => {
    for (const text of ['{"a":[1],"b":[2]}', '{"a":{"b":[1]}}', "[[1,2]]", '{"a":5}', '"[1,2]"']) {
      expect(scanJson(text, unlimited).array, text).toBeUndefined();
    }
  });

  it("cuts empty and blank items where the text has them, for JSON.parse to refuse", () => {
    const spans = (text: string) => {
      const { spans } = scanJson(text, unlimited).array!;
      return Array.from({ length: spans.length / 3 }, (_, i) => text.slice(spans[3 * i], spans[3 * i + 1]));
    };
    expect(spans('{"a":[ ]}')).toEqual([]);
    expect(spans('{"a":[ \n\t\r]}')).toEqual([]);
    // Blank to String.trim, not to JSON.
    expect(spans('{"a":[\u00a0]}')).toEqual(["\u00a0"]);
    expect(spans('{"a":[\ufeff]}')).toEqual(["\ufeff"]);
    expect(spans('{"a":[1,]}')).toEqual(["1", ""]);
    expect(spans('{"a":[,1]}')).toEqual(["", "1"]);
    expect(spans('{"a":[1 2]}')).toEqual(["1 2"]);
  });

  it("refuses a text past its pieces, and an item past its own, naming the item", () => {
    expect(() => scanJson("[[],[]]", { maxPieces: 3 })).toThrow(new TooComplex(3));
    expect(scanJson("[[],[]]", { maxPieces: 4 }).pieces).toBe(4);
    const text = JSON.stringify({ items: [[1], [1, 2, 3], [[[]]]] });
    const items = (maxPieces: number) => ({ maxPieces: Infinity, items: { maxPieces, maxCount: 10, maxChars: Infinity } });
    expect(scanJson(text, items(3)).array!.spans).toEqual([10, 13, 1, 14, 21, 3, 22, 28, 3]);
    const error = (() => {
      try {
        scanJson(text, items(2));
      } catch (error) {
        return error as TooComplex;
      }
    })();
    expect(error).toBeInstanceOf(TooComplex);
    expect(error).toMatchObject({ limit: 2, item: 1 });
  });

  it("names an item past its bound by its place, however many came before, and before the whole's bound", () => {
    const limits = (maxCount: number): JsonLimits => ({ maxPieces: 100, items: { maxPieces: 10, maxCount, maxChars: 40 } });
    const caught = (text: string, maxCount: number) => {
      try {
        scanJson(text, limits(maxCount));
      } catch (error) {
        return error;
      }
    };
    const big = (n: number) => `[${Array(n).fill(0).join(",")}]`;
    expect(caught(`{"a":[1,1,1,1,1,${big(12)}]}`, 2)).toMatchObject({ limit: 10, item: 5 });
    expect(caught(`{"a":[${big(60)}]}`, 2)).toMatchObject({ limit: 10, item: 0 });
    expect(caught(`{"a":[1,"${"x".repeat(40)}"]}`, 2)).toMatchObject({ limit: 40, item: 1, message: "more than 40 characters" });
  });

  it("reads a text fed in chunks cut anywhere, in strings and runs of backslashes too, as it reads it whole", () => {
    const random = seeded(13);
    for (let round = 0; round < 300; round++) {
      const body = { items: Array.from({ length: 1 + (round % 4) }, () => randomValue(random, 1)), s: "\\\\\"\\" };
      const text = JSON.stringify(body, null, round % 2 ? 1 : undefined);
      const scanner = new JsonScanner(unlimited);
      for (let at = 0; at < text.length; ) {
        const size = 1 + Math.floor(random() * 7);
        scanner.feed(text.slice(at, at + size));
        at += size;
      }
      expect(scanner.end(), text).toEqual(scanJson(text, unlimited));
    }
  });

  it("records one item past the most it may count, and no more", () => {
    const text = JSON.stringify({ items: Array.from({ length: 50 }, (_, i) => i) });
    expect(scanJson(text, { maxPieces: Infinity, items: { maxPieces: 1, maxCount: 10, maxChars: Infinity } }).array!.spans).toHaveLength(33);
  });
});

describe("boundPieces", () => {
  it("reads past a text's length only when it is longer than the bound, and refuses it past the bound", () => {
    expect(() => boundPieces("[".repeat(8), 8)).not.toThrow();
    expect(() => boundPieces("[".repeat(9), 8)).toThrow(TooComplex);
    expect(() => boundPieces(JSON.stringify({ log: "{[,:".repeat(1000) }), 8)).not.toThrow();
  });
});
