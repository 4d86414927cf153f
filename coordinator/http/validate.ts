// Reads and validates what a request carries; anything off becomes an ApiError naming the field.
import type { Context } from "hono";
import { setImmediate } from "node:timers/promises";
import { z, ZodError } from "zod";
import { id } from "../../protocol/fields.ts";
import { MAX_BODY_BYTES, MAX_BODY_PIECES } from "../../protocol/limits.ts";
import { UNSTORABLE } from "../db/storable.ts";
import { boundPieces, TooComplex } from "../json-scan.ts";
import { readBody } from "./body-text.ts";
import { ApiError } from "./errors.ts";

type BodyOptions = {
  /** What an empty body stands for; without it, a body is required. */
  orElse?: unknown;
};

export async function body<S extends z.ZodType>(c: Context, schema: S, { orElse }: BodyOptions = {}): Promise<z.output<S>> {
  const text = (await readBody(c, MAX_BODY_BYTES)).toString();
  if (text === "" && orElse !== undefined) return schema.parse(orElse);
  requireJson(c);
  try {
    boundPieces(text, MAX_BODY_PIECES);
  } catch (error) {
    throw refusal(error);
  }
  return parsed(text, schema);
}

export function requireJson(c: Context): void {
  if (!c.req.header("content-type")?.toLowerCase().startsWith("application/json")) {
    throw new ApiError(415, "unsupported_media_type", "send the body as application/json");
  }
}

/** `text` parsed and checked storable, then validated by `schema`. */
export function parsed<S extends z.ZodType>(text: string, schema: S): z.output<S> {
  const json = jsonOf(text);
  storable(json);
  const result = schema.safeParse(json);
  if (!result.success) throw ApiError.invalid(result.error);
  return result.data;
}

/** `text` parsed, or 400 naming the place `at` it came from. */
export function jsonOf(text: string, at: string[] = []): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const where = at.join(".");
    throw new ApiError(400, "invalid_json", `${where || "body"} is not valid JSON: ${(error as Error).message}`, where || undefined);
  }
}

/** Throws 400 if Postgres could not store `json`, found at `at`, or it nests too deep. */
export function storable(json: unknown, at: string[] = []): void {
  // An item's place counts towards its depth: one level a step of its path.
  const unstorable = unstorableAt(json, at.length);
  if (unstorable === undefined) return;
  const field = [...at, ...unstorable.path].join(".");
  throw new ApiError(400, "invalid_request", `${field || "body"}: ${unstorable.problem}`, field || undefined);
}

/** A bound of the text passed (TooComplex) as a 413, naming the item under `field` whose bound it was; other errors as they are. */
export function refusal(error: unknown, field?: string, where = ""): unknown {
  if (!(error instanceof TooComplex)) return error;
  const at = error.item === undefined ? undefined : `${field}.${error.item}`;
  return new ApiError(413, "payload_too_large", `${at ?? "body"} holds ${error.message}${where}`, at);
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
  // Without a prototype, `__proto__` is a parameter like any other, and refused as unknown.
  const values: Record<string, string> = Object.create(null);
  for (const [name, [value, ...more]] of Object.entries(c.req.queries())) {
    if (more.length > 0) throw new ApiError(400, "invalid_request", `${name}: give it once, not ${more.length + 1} times`, name);
    values[name] = value!;
  }
  const parsed = schema.safeParse(values);
  if (!parsed.success) throw ApiError.invalid(parsed.error);
  return parsed.data;
}

const NO_PARAMETERS = z.strictObject({});

/** Refuses any query parameter, naming it: the route takes none. */
export function noQuery(c: Context): void {
  if (c.req.url.includes("?")) query(c, NO_PARAMETERS);
}

export function idParam(c: Context, name = "id"): string {
  const parsed = id.safeParse(c.req.param(name));
  if (!parsed.success) throw new ApiError(400, "invalid_request", `${name}: expected a numeric id`, name);
  return parsed.data;
}
