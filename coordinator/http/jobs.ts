import { Hono } from "hono";
import { jobQuery, logQuery } from "../../protocol/api.ts";
import { jobGet, jobList } from "../sql/job-read.ts";
import { allow, type AuthEnv } from "./auth.ts";
import { ApiError } from "./errors.ts";
import { logResponse } from "./log-response.ts";
import { page } from "./page.ts";
import type { Services } from "./services.ts";
import { idParam, noQuery, query } from "./validate.ts";

export function jobRoutes(services: Services) {
  const found = async (id: string) => {
    const job = await jobGet(services.db, id);
    if (!job) throw ApiError.notFound("job", id);
    return job;
  };

  return new Hono<AuthEnv>()
    .use(allow("ci"))
    .get("/", async (c) => {
      const filter = query(c, jobQuery);
      return c.json(page(await jobList(services.db, filter), filter.limit, (job) => job.id));
    })
    .get("/:id", async (c) => {
      noQuery(c);
      return c.json(await found(idParam(c)));
    })
    .get("/:id/log", async (c) => {
      const { offset, follow } = query(c, logQuery);
      const job = await found(idParam(c));
      return logResponse(c, services, { workOrderId: job.workOrderId, jobId: job.id }, offset, follow);
    });
}
