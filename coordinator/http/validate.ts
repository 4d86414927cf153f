// Reads and validates what a request carries; anything off becomes an ApiError naming the field.
import type { Context } from "hono";
import { type z, ZodError } from "zod";
import { id } from "../../protocol/fields.ts";
import { MAX_BODY_BYTES } from "../../protocol/limits.ts";
import { UNSTORABLE } from "../db/storable.ts";
import { ApiError } from "./errors.ts";

type BodyOptions = {
  /** What an empty body stands for; without it, a body is required. */
  orElse?: unknown;
  maxBytes?: number;
};

export async function body<S extends z.ZodType>(c: Context, schema: S, { orElse, maxBytes = MAX_BODY_BYTES }: BodyOptions = {}): Promise<z.output<S>> {
  const text = await boundedText(c, maxBytes);
  if (text === "" && orElse !== undefined) return schema.parse(orElse);
  if (!c.req.header("content-type")?.toLowerCase().startsWith("application/json")) {
    throw new ApiError(415, "unsupported_media_type", "send the body as application/json");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ApiError(400, "invalid_json", `body is not valid JSON: ${(error as Error).message}`);
  }
  const unstorable = unstorableAt(json);
  if (unstorable !== undefined) {
    const where = unstorable.path.join(".");
    throw new ApiError(400, "invalid_request", `${where || "body"}: ${unstorable.problem}`, where || undefined);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw ApiError.invalid(parsed.error);
  return parsed.data;
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
    return decode(new Uint8Array(await c.req.arrayBuffer()));
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

/** `items[from, to)`, each validated by `schema`; a failure names its field as `${field}.${index}...`. */
export function validItems<S extends z.ZodType>(schema: S, items: readonly unknown[], from: number, to: number, field: string): z.output<S>[] {
  const valid: z.output<S>[] = [];
  for (let i = from; i < to; i++) {
    const parsed = schema.safeParse(items[i]);
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
