// The coordinator's HTTP API: JSON under /v1, bearer tokens, one error shape.
import { Hono } from "hono";
import { isUnavailable } from "../db/unavailable.ts";
import { agentRoutes } from "./agents.ts";
import { authenticate, type AuthEnv } from "./auth.ts";
import { ApiError, errorResponse } from "./errors.ts";
import { jobRoutes } from "./jobs.ts";
import type { Services } from "./services.ts";
import { tokenRoutes } from "./tokens.ts";
import { workOrderRoutes } from "./work-orders.ts";

const RETRY_AFTER_SECONDS = 2;

export function createApp(services: Services, onError: (error: unknown) => void = () => {}) {
  const v1 = new Hono<AuthEnv>()
    .use(authenticate(services.verifier, services.requestRate))
    .route("/work-orders", workOrderRoutes(services))
    .route("/jobs", jobRoutes(services))
    .route("/agents", agentRoutes(services))
    .route("/tokens", tokenRoutes(services));

  return new Hono()
    .get("/healthz", async (c) => {
      await services.db.query("SELECT 1");
      return c.json({ ok: true });
    })
    .route("/v1", v1)
    .notFound((c) => errorResponse(c, new ApiError(404, "not_found", `no route for ${c.req.method} ${c.req.path}`)))
    .onError((error, c) => {
      if (error instanceof ApiError) return errorResponse(c, error);
      if (isUnavailable(error)) {
        return errorResponse(c, new ApiError(503, "unavailable", "the database is unavailable; try again shortly", undefined, RETRY_AFTER_SECONDS));
      }
      onError(error);
      return errorResponse(c, new ApiError(500, "internal", "internal error"));
    });
}
