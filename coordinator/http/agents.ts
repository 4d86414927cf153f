import { asc } from "drizzle-orm";
import { Hono } from "hono";
import type { AgentView } from "../../protocol/api.ts";
import { agents } from "../db/schema.ts";
import { allow, type AuthEnv } from "./auth.ts";
import type { Services } from "./services.ts";

export function agentRoutes({ db }: Services) {
  return new Hono<AuthEnv>().use(allow("ci")).get("/", async (c) => {
    const rows = await db.orm.select().from(agents).orderBy(asc(agents.name));
    const items: AgentView[] = rows.map((a) => ({
      id: a.id,
      name: a.name,
      labels: a.labels,
      capacity: a.capacity,
      prefetch: a.prefetch,
      mode: a.mode,
      version: a.version,
      connected: a.sessionId !== null,
      lastSeenAt: a.lastSeenAt.toISOString(),
    }));
    return c.json({ items });
  });
}
