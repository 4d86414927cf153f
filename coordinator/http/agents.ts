import { Hono } from "hono";
import { agentQuery } from "../../protocol/api.ts";
import { agentList } from "../sql/agent-read.ts";
import { allow, type AuthEnv } from "./auth.ts";
import { page } from "./page.ts";
import type { Services } from "./services.ts";
import { query } from "./validate.ts";

export function agentRoutes({ db }: Services) {
  return new Hono<AuthEnv>().use(allow("ci")).get("/", async (c) => {
    const filter = query(c, agentQuery);
    return c.json(page(await agentList(db, filter), filter.limit, (agent) => agent.name));
  });
}
