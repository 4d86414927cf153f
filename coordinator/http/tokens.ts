import { Hono } from "hono";
import { tokenCreate as tokenCreateBody, tokenQuery } from "../../protocol/api.ts";
import { tokenCreate, tokenList, tokenRevoke } from "../auth/tokens.ts";
import { allow, type AuthEnv } from "./auth.ts";
import { ApiError } from "./errors.ts";
import type { Services } from "./services.ts";
import { page } from "./page.ts";
import { body, idParam, noQuery, query } from "./validate.ts";

export function tokenRoutes({ db }: Services) {
  return new Hono<AuthEnv>()
    .use(allow("admin"))
    .post("/", async (c) => {
      noQuery(c);
      const { name, role } = await body(c, tokenCreateBody);
      const { token, view } = await tokenCreate(db, name, role);
      return c.json({ ...view, token }, 201);
    })
    .get("/", async (c) => {
      const filter = query(c, tokenQuery);
      return c.json(page(await tokenList(db, filter), filter.limit, (token) => token.id));
    })
    .delete("/:id", async (c) => {
      noQuery(c);
      const id = idParam(c);
      if (!(await tokenRevoke(db, id))) throw ApiError.notFound("token", id);
      return c.body(null, 204);
    });
}
