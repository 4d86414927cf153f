// The one error type of the HTTP API and its JSON form `{error: {code, message, field?}}`.
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { z } from "zod";
import { describeIssues } from "../../protocol/issues.ts";

export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly field?: string,
    /** Sent as `Retry-After`: the request may succeed then. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }

  static invalid(error: z.ZodError): ApiError {
    const { message, field } = describeIssues(error);
    return new ApiError(400, "invalid_request", message, field);
  }

  static notFound(what: string, id: string): ApiError {
    return new ApiError(404, "not_found", `${what} ${id} not found`);
  }
}

export function errorResponse(c: Context, error: ApiError): Response {
  const body = { code: error.code, message: error.message, ...(error.field ? { field: error.field } : {}) };
  if (error.retryAfterSeconds !== undefined) c.header("Retry-After", String(error.retryAfterSeconds));
  return c.json({ error: body }, error.status);
}
