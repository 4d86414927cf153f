// Whether an error means the database cannot be reached right now (restarting, down, unreachable),
// as opposed to a bad query: the first is answered with 503 and retried, the second is a bug.

import { PASSING_NETWORK_ERRORS } from "../../protocol/network-errors.ts";

/** postgres-js's own codes of a connection lost or not made, and the system's. */
const CONNECTION_CODES = new Set<string>(["CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT", ...PASSING_NETWORK_ERRORS]);

/** SQLSTATE classes and codes of a server that is going away or not yet accepting work. */
const SERVER_CODES = /^(08|57P0[1-3]|53300)/;

/**
 * A database that does not take connections now (`ALLOW_CONNECTIONS false`, as during maintenance):
 * 55000 alone is also a statement's (a sequence's `currval` not yet defined), so only when fatal,
 * which a statement's is not.
 */
const NOT_ACCEPTING = "55000";

/** Codes of a connection that was never made: no statement was sent on it. */
// (A host or network unreachable may be an open connection's too, its retransmissions given up.)
const UNSENT_CODES = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|CONNECT_TIMEOUT|53300|57P03|55000)$/;

export function isUnavailable(error: unknown): boolean {
  return unavailableCode(error) !== undefined;
}

/**
 * Whether a statement that failed so may still have committed: the database went away after it
 * was sent, and its answer with it. A statement the database refused was rolled back.
 */
export function mayHaveCommitted(error: unknown): boolean {
  const code = unavailableCode(error);
  return code !== undefined && !UNSENT_CODES.test(code);
}

/** Looks through wrappers (drizzle wraps driver errors, with the original as `cause`). */
function unavailableCode(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; severity?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code !== "string") continue;
    if (CONNECTION_CODES.has(e.code) || SERVER_CODES.test(e.code)) return e.code;
    if (e.code === NOT_ACCEPTING && e.severity === "FATAL") return e.code;
  }
  return undefined;
}
