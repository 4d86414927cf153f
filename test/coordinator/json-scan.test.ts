// The scan that bounds JSON text before JSON.parse builds it: its count of pieces against one
// worked out from the value, and the items of a body's array cut out whole, whatever their strings hold.
import { describe, expect, it } from "vitest";
import { boundPieces, scanJson, TooComplex } from "../../coordinator/json-scan.ts";

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

const unlimited = { maxPieces: Infinity, items: { maxPieces: Infinity, maxCount: Infinity } };

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
      const cut = Array.from({ length: spans.length / 2 }, (_, i) => JSON.parse(text.slice(spans[2 * i], spans[2 * i + 1])));
      expect(cut).toEqual(items);
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
      return Array.from({ length: spans.length / 2 }, (_, i) => text.slice(spans[2 * i], spans[2 * i + 1]));
    };
    expect(spans('{"a":[ ]}')).toEqual([]);
    expect(spans('{"a":[1,]}')).toEqual(["1", ""]);
    expect(spans('{"a":[,1]}')).toEqual(["", "1"]);
    expect(spans('{"a":[1 2]}')).toEqual(["1 2"]);
  });

  it("refuses a text past its pieces, and an item past its own, naming the item", () => {
    expect(() => scanJson("[[],[]]", { maxPieces: 3 })).toThrow(new TooComplex(3));
    expect(scanJson("[[],[]]", { maxPieces: 4 }).pieces).toBe(4);
    const text = JSON.stringify({ items: [[1], [1, 2, 3], [[[]]]] });
    const items = (maxPieces: number) => ({ maxPieces: Infinity, items: { maxPieces, maxCount: 10 } });
    expect(scanJson(text, items(3)).array!.spans).toHaveLength(6);
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

  it("records one item past the most it may count, and no more", () => {
    const text = JSON.stringify({ items: Array.from({ length: 50 }, (_, i) => i) });
    expect(scanJson(text, { maxPieces: Infinity, items: { maxPieces: 1, maxCount: 10 } }).array!.spans).toHaveLength(22);
  });
});

describe("boundPieces", () => {
  it("reads past a text's length only when it is longer than the bound, and refuses it past the bound", () => {
    expect(() => boundPieces("[".repeat(8), 8)).not.toThrow();
    expect(() => boundPieces("[".repeat(9), 8)).toThrow(TooComplex);
    expect(() => boundPieces(JSON.stringify({ log: "{[,:".repeat(1000) }), 8)).not.toThrow();
  });
});
