// A body of many items, such as a bulk enqueue: `{"<field>": [items…], …}`. It is scanned as it
// arrives (json-scan.ts), and its items are parsed only as they are asked for, a group of them at a
// time, so that no parse holds the event loop for longer than a bounded group's: a whole bulk body
// of `[{},…]` held it seconds. Each item is held to the bounds of a body of its own.
import type { Context } from "hono";
import type { z } from "zod";
import { MAX_BODY_BYTES, MAX_BODY_PIECES, MAX_BULK_PIECES } from "../../protocol/limits.ts";
import { JsonScanner, TooComplex } from "../json-scan.ts";
import { type BodyText, readBody } from "./body-text.ts";
import { jsonOf, parsed, refusal, requireJson, storable } from "./validate.ts";

/**
 * Pieces parsed at once: 4 ms or so of the costliest text, and a few thousand plain work orders,
 * for which a parse each took 1.7 times as long as one parse of them all.
 */
const GROUP_PIECES = 16_384;

export type Items = { count: number; item(i: number): unknown };

/** The body validated by `schema` (with `null` for each item), and its items, parsed when asked for. */
export async function itemsBody<S extends z.ZodType>(c: Context, schema: S, field: string, { maxBytes, maxItems }: { maxBytes: number; maxItems: number }): Promise<Items> {
  requireJson(c);
  const scanner = new JsonScanner({ maxPieces: MAX_BULK_PIECES, items: { maxPieces: MAX_BODY_PIECES, maxChars: MAX_BODY_BYTES, maxCount: maxItems } });
  const text = await readBody(c, maxBytes, (chunk) => scanner.feed(chunk)).catch((error: unknown) => {
    throw refusal(error, field);
  });
  const { pieces, array } = scanner.end();
  const outside = array ? text.length - (array.close - array.open - 1) : text.length;
  const where = array ? ` outside ${field}` : "";
  // What is not an item of the array is parsed in one go: it is held to a body's bounds.
  if (outside > MAX_BODY_BYTES) throw refusal(new TooComplex(MAX_BODY_BYTES, undefined, `more than ${MAX_BODY_BYTES} characters`), field, where);
  if (pieces - (array?.pieces ?? 0) > MAX_BODY_PIECES) throw refusal(new TooComplex(MAX_BODY_PIECES), field, where);
  if (!array) {
    // Not one array among an object's values: read whole, as any body, and let the schema say what is amiss.
    const items = (parsed(text.toString(), schema) as Record<string, unknown[]>)[field]!;
    return { count: items.length, item: (i) => items[i] };
  }
  const { open, close, spans } = array;
  const count = spans.length / 3;
  parsed(text.slice(0, open + 1) + Array(count).fill("null").join(",") + text.slice(close), schema);
  const groups = new Groups(text, spans, field);
  return { count, item: (i) => groups.item(i) };
}

/** The items of a body's array, parsed a group at a time from `spans` (start, end and pieces of each). */
class Groups {
  private from = 0;
  private values: unknown[] = [];

  constructor(
    private readonly text: BodyText,
    private readonly spans: number[],
    private readonly field: string,
  ) {}

  /** Item `i`, checked storable; an error names it. Items are asked for in turn, and judged so. */
  item(i: number): unknown {
    if (i < this.from || i >= this.from + this.values.length) {
      this.values = this.group(i);
      this.from = i;
    }
    const value = this.values[i - this.from];
    storable(value, [this.field, String(i)]);
    return value;
  }

  /**
   * The items from `from` on, as many as GROUP_PIECES and a body's length allow; if they do not
   * parse together, those before the first that does not parse alone, or its error.
   */
  private group(from: number): unknown[] {
    const { spans } = this;
    const start = spans[3 * from]!;
    let [to, pieces] = [from + 1, spans[3 * from + 2]!];
    for (; 3 * to < spans.length; to++) {
      pieces += spans[3 * to + 2]!;
      if (pieces > GROUP_PIECES || spans[3 * to + 1]! - start > MAX_BODY_BYTES) break;
    }
    const together = this.together(from, to);
    if (together) return together;
    const values = [this.one(from)];
    for (let i = from + 1; i < to; i++) {
      try {
        values.push(this.one(i));
      } catch {
        break;
      }
    }
    return values;
  }

  /**
   * Items `[from, to)` in one parse, if each is a JSON value within a body's bytes; else undefined.
   * Their text, with the commas between them, parses as an array of them alone: the scan cut the
   * items at the commas that separate them, wherever the text is JSON.
   */
  private together(from: number, to: number): unknown[] | undefined {
    const text = this.textOf(from, to);
    if (Buffer.byteLength(text) > MAX_BODY_BYTES) return undefined;
    try {
      const values = JSON.parse(`[${text}]`) as unknown[];
      return values.length === to - from ? values : undefined;
    } catch {
      return undefined;
    }
  }

  /** The text of items `[from, to)`, with what separates them. */
  private textOf(from: number, to: number): string {
    return this.text.slice(this.spans[3 * from]!, this.spans[3 * (to - 1) + 1]!);
  }

  /** Item `i` alone, or an error that names it. */
  private one(i: number): unknown {
    const text = this.textOf(i, i + 1);
    if (Buffer.byteLength(text) > MAX_BODY_BYTES) throw refusal(new TooComplex(MAX_BODY_BYTES, i, `more than ${MAX_BODY_BYTES} bytes`), this.field);
    return jsonOf(text, [this.field, String(i)]);
  }
}
