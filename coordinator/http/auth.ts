// Bearer-token authentication and role checks for every /v1 route.
import type { MiddlewareHandler } from "hono";
import type { Role } from "../../protocol/api.ts";
import type { Principal, TokenVerifier } from "../auth/tokens.ts";
import { ApiError } from "./errors.ts";

export type AuthEnv = { Variables: { principal: Principal } };

export function authenticate(verifier: TokenVerifier): MiddlewareHandler<AuthEnv> {
  return async (c, next) => {
    const [scheme, token] = c.req.header("authorization")?.trim().split(/\s+/) ?? [];
    if (scheme?.toLowerCase() !== "bearer" || !token) {
      throw new ApiError(401, "unauthenticated", "send a token: Authorization: Bearer <token>");
    }
    const principal = await verifier.verify(token);
    if (!principal) throw new ApiError(401, "unauthenticated", "the token is not valid");
    c.set("principal", principal);
    await next();
  };
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
