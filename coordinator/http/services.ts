import type { TokenVerifier } from "../auth/tokens.ts";
import type { Bus } from "../bus.ts";
import type { Database } from "../db/database.ts";
import type { Dispatcher } from "../dispatch/dispatcher.ts";
import type { Followers } from "../logs/followers.ts";
import type { RateLimits } from "../rate/rate-limits.ts";

/**
 * What the HTTP routes work with. `closing` is aborted when the coordinator stops: long responses
 * end then. Without a `dispatcher`, every order waits in the pool for a wake-up. `requestRate`:
 * requests per token, if limited.
 */
export type Services = {
  db: Database;
  bus: Bus;
  verifier: TokenVerifier;
  followers: Followers;
  dispatcher?: Pick<Dispatcher, "hold">;
  requestRate?: RateLimits;
  closing?: AbortSignal;
};
