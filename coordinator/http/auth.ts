// Bearer-token authentication, role checks and request rates for every /v1 route.
import type { HttpBindings } from "@hono/node-server";
import type { Context, MiddlewareHandler } from "hono";
import type { Role } from "../../protocol/api.ts";
import { type Principal, Throttled, type TokenVerifier } from "../auth/tokens.ts";
import type { RateLimits } from "../rate/rate-limits.ts";
import { ApiError } from "./errors.ts";

export type AuthEnv = { Bindings: Partial<HttpBindings>; Variables: { principal: Principal } };

/** `requests`: requests per token, if limited. Failed authentications are the verifier's to count. */
export function authenticate(verifier: TokenVerifier, requests?: RateLimits): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    const principal = await principalOf(c, verifier);
    const wait = requests?.tryTake(principal.tokenId) ?? 0;
    if (wait > 0) {
      const { perSecond, burst } = requests!.rate;
      throw tooMany(`token ${principal.name} may make ${perSecond} request${perSecond === 1 ? "" : "s"} a second (bursts of ${burst})`, wait);
    }
    c.set("principal", principal);
    await next();
  };
}

async function principalOf(c: Context<AuthEnv>, verifier: TokenVerifier): Promise<Principal> {
  const [scheme, token] = c.req.header("authorization")?.trim().split(/\s+/) ?? [];
  if (scheme?.toLowerCase() !== "bearer" || !token) {
    throw new ApiError(401, "unauthenticated", "send a token: Authorization: Bearer <token>");
  }
  // Requests made in-process (tests) have no address.
  const principal = await verifier.verify(token, c.env?.incoming?.socket.remoteAddress).catch((error: unknown) => {
    throw error instanceof Throttled ? tooMany(error.message, error.waitMs) : error;
  });
  if (!principal) throw new ApiError(401, "unauthenticated", "the token is not valid");
  return principal;
}

function tooMany(what: string, waitMs: number): ApiError {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return new ApiError(429, "rate_limited", `${what}; try again in ${seconds} s`, undefined, seconds);
}

export function allow(...roles: Role[]): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    const { role } = c.get("principal");
    if (role !== "admin" && !roles.includes(role)) {
      throw new ApiError(403, "forbidden", `a ${role} token may not do this`);
    }
    await next();
  };
}
