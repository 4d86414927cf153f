// Reads and validates what a request carries; anything off becomes an ApiError naming the field.
import type { Context } from "hono";
import type { z } from "zod";
import { id } from "../../protocol/fields.ts";
import { ApiError } from "./errors.ts";

export async function body<S extends z.ZodType>(c: Context, schema: S, orElse?: unknown): Promise<z.output<S>> {
  const text = await c.req.text();
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
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw ApiError.invalid(parsed.error);
  return parsed.data;
}

export function query<S extends z.ZodType>(c: Context, schema: S): z.output<S> {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw ApiError.invalid(parsed.error);
  return parsed.data;
}

export function idParam(c: Context, name = "id"): string {
  const parsed = id.safeParse(c.req.param(name));
  if (!parsed.success) throw new ApiError(400, "invalid_request", `${name}: expected a numeric id`, name);
  return parsed.data;
}
