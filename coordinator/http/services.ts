import type { TokenVerifier } from "../auth/tokens.ts";
import type { Bus } from "../bus.ts";
import type { Database } from "../db/database.ts";
import type { Followers } from "../logs/followers.ts";

/** What the HTTP routes work with. `closing` is aborted when the coordinator stops: long responses end then. */
export type Services = { db: Database; bus: Bus; verifier: TokenVerifier; followers: Followers; closing?: AbortSignal };
