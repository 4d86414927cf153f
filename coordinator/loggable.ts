// Errors as the coordinator logs them. A database error quotes the input it failed on (in `detail`
// and `where`), and that input may be a work order's secret environment.

const QUOTING = new Set(["detail", "where", "hint", "internal_query", "query", "parameters"]);

/** The error's type, message, stack and fields, less those that quote data. */
export function withoutData(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const fields = Object.fromEntries(Object.entries(error).filter(([key]) => !QUOTING.has(key)));
  return { type: error.name, message: error.message, stack: error.stack, ...fields };
}
