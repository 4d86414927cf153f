// A statement whose connection was lost after it was sent may have committed unanswered (the
// database went away at COMMIT): the work it made claimable, or gave back, was then never
// announced to the agents that wait for announcements. Whoever waits must look again once the
// database answers again.
import type { Database } from "./database.ts";
import { mayHaveCommitted } from "./unavailable.ts";

/** `db`, calling `onRecovered` at its first success after a write that may have committed unanswered. */
export function afterUncertainCommits(db: Database, onRecovered: () => void): Database {
  let uncertain = false;
  const watched = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      const result = await run();
      if (uncertain) {
        uncertain = false;
        onRecovered();
      }
      return result;
    } catch (error) {
      if (mayHaveCommitted(error)) uncertain = true;
      throw error;
    }
  };
  return {
    ...db,
    query: <Row>(text: string, params?: unknown[]) => watched(() => db.query<Row>(text, params)),
    // Claims run here: one lost at its commit may have been rolled back while other groups, which
    // skipped its locked rows, called themselves dry.
    generic: {
      query: <Row>(text: string, params?: unknown[]) => watched(() => db.generic.query<Row>(text, params)),
      transaction: (fn) => watched(() => db.generic.transaction(fn)),
    },
    transaction: (fn) => watched(() => db.transaction(fn)),
  };
}
