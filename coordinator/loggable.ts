// Errors as the coordinator logs them. A database error quotes the input it failed on (in `detail`
// and `where`), and that input may be a work order's secret environment. Drizzle wraps a driver's
// error in one that quotes the statement's parameters (a new token's hash among them) in its
// message and stack: the driver's error is logged in its place.
import { DrizzleQueryError } from "drizzle-orm/errors";

// `params` and `queryOptions`: as PGlite names them; the rest as Postgres (and postgres-js) do.
const QUOTING = new Set(["detail", "where", "hint", "internal_query", "query", "parameters", "params", "queryOptions"]);

/** The error's type, message, stack and fields, less those that quote data. */
export function withoutData(error: unknown): unknown {
  if (error instanceof DrizzleQueryError) return { type: error.name, cause: withoutData(error.cause) };
  if (!(error instanceof Error)) return error;
  const fields = Object.fromEntries(Object.entries(error).filter(([key]) => !QUOTING.has(key)));
  return { type: error.name, message: error.message, stack: error.stack, ...fields };
}
