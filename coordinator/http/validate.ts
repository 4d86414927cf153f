// Reads and validates what a request carries; anything off becomes an ApiError naming the field.
import type { Context } from "hono";
import { setImmediate } from "node:timers/promises";
import { type z, ZodError } from "zod";
import { id } from "../../protocol/fields.ts";
import { MAX_BODY_BYTES, MAX_BODY_PIECES, MAX_BULK_PIECES } from "../../protocol/limits.ts";
import { UNSTORABLE } from "../db/storable.ts";
import { boundPieces, scanJson, TooComplex } from "../json-scan.ts";
import { ApiError } from "./errors.ts";

type BodyOptions = {
  /** What an empty body stands for; without it, a body is required. */
  orElse?: unknown;
};

export async function body<S extends z.ZodType>(c: Context, schema: S, { orElse }: BodyOptions = {}): Promise<z.output<S>> {
  const text = await boundedText(c, MAX_BODY_BYTES);
  if (text === "" && orElse !== undefined) return schema.parse(orElse);
  requireJson(c);
  bounded(() => boundPieces(text, MAX_BODY_PIECES));
  return parsed(text, schema);
}

/**
 * A body `{"<field>": [items…], …}` of many items, such as a bulk enqueue. The rest of the body is
 * validated by `schema`, with `null` for each item; each item is parsed only when `item(i)` asks
 * for it, so that no parse holds the event loop for longer than an item's.
 * Each item is held to the bounds of a body of its own, the whole to `MAX_BULK_PIECES`.
 */
export async function itemsBody<S extends z.ZodType>(
  c: Context,
  schema: S,
  field: string,
  { maxBytes, maxItems }: { maxBytes: number; maxItems: number },
): Promise<{ count: number; item(i: number): unknown }> {
  const text = await boundedText(c, maxBytes);
  requireJson(c);
  const { pieces, array } = bounded(() => scanJson(text, { maxPieces: MAX_BULK_PIECES, items: { maxPieces: MAX_BODY_PIECES, maxCount: maxItems } }), field);
  if (!array) {
    // Not one array among an object's values: read whole, as any body, and let the schema say what is amiss.
    bounded(() => boundPieces(text, MAX_BODY_PIECES));
    const whole = parsed(text, schema);
    const items = (whole as Record<string, unknown[]>)[field]!;
    return { count: items.length, item: (i) => items[i] };
  }
  if (pieces - array.pieces > MAX_BODY_PIECES) throw tooComplex(`body holds ${new TooComplex(MAX_BODY_PIECES).message} outside ${field}`);
  const { open, close, spans } = array;
  const count = spans.length / 2;
  const envelope = text.slice(0, open + 1) + Array(count).fill("null").join(",") + text.slice(close);
  parsed(envelope, schema);
  return { count, item: (i) => parsed(text.slice(spans[2 * i], spans[2 * i + 1]), undefined, [field, String(i)]) };
}

function requireJson(c: Context): void {
  if (!c.req.header("content-type")?.toLowerCase().startsWith("application/json")) {
    throw new ApiError(415, "unsupported_media_type", "send the body as application/json");
  }
}

/** `text` parsed and checked storable, then validated by `schema` if given; errors name the place as under `at`. */
function parsed<S extends z.ZodType>(text: string, schema: S | undefined, at: string[] = []): z.output<S> {
  const where = (path: string[]) => [...at, ...path].join(".");
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const what = at.length > 0 ? `${where([])} is` : "body is";
    throw new ApiError(400, "invalid_json", `${what} not valid JSON: ${(error as Error).message}`, where([]) || undefined);
  }
  // An item's place counts towards its depth: one level a step of its path.
  const unstorable = unstorableAt(json, at.length);
  if (unstorable !== undefined) {
    const field = where(unstorable.path);
    throw new ApiError(400, "invalid_request", `${field || "body"}: ${unstorable.problem}`, field || undefined);
  }
  if (!schema) return json as z.output<S>;
  const result = schema.safeParse(json);
  if (!result.success) throw ApiError.invalid(result.error);
  return result.data;
}

/** What `scan` returns, or 413 past a bound of pieces; an item's bound names the item under `field`. */
function bounded<T>(scan: () => T, field?: string): T {
  try {
    return scan();
  } catch (error) {
    if (!(error instanceof TooComplex)) throw error;
    const at = error.item === undefined ? undefined : `${field}.${error.item}`;
    throw tooComplex(`${at ?? "body"} holds ${error.message}`, at);
  }
}

function tooComplex(message: string, field?: string): ApiError {
  return new ApiError(413, "payload_too_large", message, field);
}

/**
 * The body as text, or 413 past `maxBytes`. A Content-Length decides before anything is read (Node's
 * server holds the client to it), and the body is then read straight off the socket; only a chunked
 * body is counted as it streams in. (Hono's bodyLimit middleware asks every request for its web
 * `body` stream, which makes @hono/node-server build a whole Request and AbortSignal per request.)
 */
async function boundedText(c: Context, maxBytes: number): Promise<string> {
  const tooLarge = () => new ApiError(413, "payload_too_large", `bodies are limited to ${maxBytes} bytes`);
  const length = c.req.header("content-length");
  // Bytes that are not UTF-8 are refused, not read as U+FFFD: a command would run other than sent.
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const decode = (bytes?: Uint8Array, stream = false) => {
    try {
      return decoder.decode(bytes, { stream });
    } catch {
      throw new ApiError(400, "invalid_json", "body is not valid UTF-8");
    }
  };
  if (length !== undefined && c.req.header("transfer-encoding") === undefined) {
    if (Number(length) > maxBytes) throw tooLarge();
    // Past a general body's size, decoded as it comes: 32 MiB at once held the event loop 90 ms.
    if (Number(length) <= MAX_BODY_BYTES) return decode(new Uint8Array(await c.req.arrayBuffer()));
  }
  const reader = c.req.raw.body?.getReader();
  if (!reader) return "";
  let size = 0;
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text + decode();
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    text += decode(value, true);
  }
}

/** How deep a body's JSON may nest: well past any real document, well short of a stack overflow. */
export const MAX_JSON_DEPTH = 64;

/**
 * The first place in `value` that Postgres could not store, or that nests too deep. The path is
 * built on the way back from a find, so a body of 10,000 work orders walks without allocating.
 */
function unstorableAt(value: unknown, depth = 0): { path: string[]; problem: string } | undefined {
  if (typeof value === "string") return UNSTORABLE.test(value) ? { path: [], problem: "text may not contain NUL (\\u0000) or an unpaired surrogate" } : undefined;
  if (typeof value !== "object" || value === null) return undefined;
  if (depth >= MAX_JSON_DEPTH) return { path: [], problem: `JSON may nest at most ${MAX_JSON_DEPTH} deep` };
  for (const key in value) {
    if (UNSTORABLE.test(key)) return { path: [key], problem: "keys may not contain NUL (\\u0000) or an unpaired surrogate" };
    // Schemas would drop it without a word (it names an object's prototype), losing what was sent.
    if (key === "__proto__") return { path: [key], problem: "the key __proto__ is not taken" };
    const found = unstorableAt((value as Record<string, unknown>)[key], depth + 1);
    if (found) {
      found.path.unshift(key);
      return found;
    }
  }
  return undefined;
}

/** How long a run of items may hold the event loop. */
const SLICE_MS = 10;

/** `items[from, to)`, each validated by `schema`; a failure names its field as `${field}.${index}...`. */
export async function validItems<S extends z.ZodType>(schema: S, item: (i: number) => unknown, from: number, to: number, field: string): Promise<z.output<S>[]> {
  const valid: z.output<S>[] = [];
  let slice = performance.now();
  for (let i = from; i < to; i++) {
    // Items of a few ms each add up: others' requests are let through every SLICE_MS.
    if (performance.now() - slice > SLICE_MS) {
      await setImmediate();
      slice = performance.now();
    }
    const parsed = schema.safeParse(item(i));
    if (!parsed.success) throw ApiError.invalid(new ZodError(parsed.error.issues.map((issue) => ({ ...issue, path: [field, i, ...issue.path] }))));
    valid.push(parsed.data);
  }
  return valid;
}

/** The query string validated by `schema`; no parameter takes several values, so a repeated one is refused. */
export function query<S extends z.ZodType>(c: Context, schema: S): z.output<S> {
  const values: Record<string, string> = {};
  for (const [name, [value, ...more]] of Object.entries(c.req.queries())) {
    if (more.length > 0) throw new ApiError(400, "invalid_request", `${name}: give it once, not ${more.length + 1} times`, name);
    values[name] = value!;
  }
  const parsed = schema.safeParse(values);
  if (!parsed.success) throw ApiError.invalid(parsed.error);
  return parsed.data;
}

export function idParam(c: Context, name = "id"): string {
  const parsed = id.safeParse(c.req.param(name));
  if (!parsed.success) throw new ApiError(400, "invalid_request", `${name}: expected a numeric id`, name);
  return parsed.data;
}
