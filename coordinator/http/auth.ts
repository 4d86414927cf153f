// Bearer-token authentication, role checks and request rates for every /v1 route.
import type { HttpBindings } from "@hono/node-server";
import type { Context, MiddlewareHandler } from "hono";
import type { Role } from "../../protocol/api.ts";
import type { Principal, TokenVerifier } from "../auth/tokens.ts";
import type { RateLimits } from "../rate/rate-limits.ts";
import { ApiError } from "./errors.ts";

export type AuthEnv = { Bindings: Partial<HttpBindings>; Variables: { principal: Principal } };

/**
 * `failures`: failed authentications per client address. One that has failed too often is turned
 * away before its token is looked at, so guessing costs no database reads. `requests`: requests
 * per token, if limited.
 */
export type RequestLimits = { failures: RateLimits; requests?: RateLimits };

export function authenticate(verifier: TokenVerifier, limits?: RequestLimits): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    const address = clientAddress(c);
    const barred = limits?.failures.wait(address) ?? 0;
    if (barred > 0) throw tooMany(`too many failed authentications from ${address}`, barred);
    const principal = await principalOf(c, verifier).catch((error: unknown) => {
      if (error instanceof ApiError) limits?.failures.tryTake(address);
      throw error;
    });
    const wait = limits?.requests?.tryTake(principal.tokenId) ?? 0;
    if (wait > 0) {
      const { perSecond, burst } = limits!.requests!.rate;
      throw tooMany(`token ${principal.name} may make ${perSecond} request${perSecond === 1 ? "" : "s"} a second (bursts of ${burst})`, wait);
    }
    c.set("principal", principal);
    await next();
  };
}

async function principalOf(c: Context, verifier: TokenVerifier): Promise<Principal> {
  const [scheme, token] = c.req.header("authorization")?.trim().split(/\s+/) ?? [];
  if (scheme?.toLowerCase() !== "bearer" || !token) {
    throw new ApiError(401, "unauthenticated", "send a token: Authorization: Bearer <token>");
  }
  const principal = await verifier.verify(token);
  if (!principal) throw new ApiError(401, "unauthenticated", "the token is not valid");
  return principal;
}

/** The peer's address; requests made in-process (tests) have none. */
function clientAddress(c: Context<AuthEnv>): string {
  return c.env?.incoming?.socket.remoteAddress ?? "in-process";
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
