// Whether an error means the database cannot be reached right now (restarting, down, unreachable),
// as opposed to a bad query: the first is answered with 503 and retried, the second is a bug.

const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
]);

/** SQLSTATE classes and codes of a server that is going away or not yet accepting work. */
const SERVER_CODES = /^(08|57P0[1-3]|53300)/;

export function isUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code !== "string") return false;
  return CONNECTION_CODES.has(code) || SERVER_CODES.test(code);
}
