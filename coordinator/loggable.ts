// Errors as the coordinator logs them. A database error quotes the input it failed on (in `detail`
// and `where`), and that input may be a work order's secret environment. Drizzle wraps a driver's
// error in one that quotes the statement's parameters (a new token's hash among them) in its
// message and stack: the driver's error is logged in its place.
import { DrizzleQueryError } from "drizzle-orm/errors";
import type { Logger } from "pino";
import { isUnavailable } from "./db/unavailable.ts";

// `params` and `queryOptions`: as PGlite names them; the rest as Postgres (and postgres-js) do.
const QUOTING = new Set(["detail", "where", "hint", "internal_query", "query", "parameters", "params", "queryOptions"]);

/** The error's type, message, stack and fields, less those that quote data. */
export function withoutData(error: unknown): unknown {
  if (error instanceof DrizzleQueryError) return { type: error.name, cause: withoutData(error.cause) };
  if (!(error instanceof Error)) return error;
  const fields = Object.fromEntries(Object.entries(error).filter(([key]) => !QUOTING.has(key)));
  return { type: error.name, message: error.message, stack: error.stack, ...fields };
}

/**
 * How the coordinator logs a failure of its own work (a claim round, the relay, the reaper, upkeep,
 * a request): the database away is a warning, since that work is tried again and the outage is
 * the operator's to see, not a bug; anything else is an internal error.
 */
export function errorLogger(logger: Logger): (error: unknown) => void {
  // Under `error`, not `err`: pino's serializer of `err` takes the plain object for an error and
  // writes its type as "Object".
  return (error) =>
    isUnavailable(error) ? logger.warn({ error: withoutData(error) }, "database unavailable") : logger.error({ error: withoutData(error) }, "internal error");
}
