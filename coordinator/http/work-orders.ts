import { Hono } from "hono";
import { z } from "zod";
import { logQuery, MAX_BULK_ORDERS, workOrderBulk, workOrderCreate, workOrderQuery } from "../../protocol/api.ts";
import { MAX_BULK_BODY_BYTES } from "../../protocol/limits.ts";
import { Enqueuer } from "../enqueuer.ts";
import { workOrderCancel } from "../sql/work-order-cancel.ts";
import { describeReuse, type KeyReuse, KeyReused, workOrderInsertChunked } from "../sql/work-order-insert.ts";
import { workOrderEvents, workOrderGet, workOrderList } from "../sql/work-order-read.ts";
import { iso, workOrderView } from "../sql/views.ts";
import { allow, type AuthEnv } from "./auth.ts";
import { ApiError } from "./errors.ts";
import { logResponse } from "./log-response.ts";
import { page } from "./page.ts";
import type { Services } from "./services.ts";
import { itemsBody } from "./items-body.ts";
import { body, idParam, noQuery, query, validItems } from "./validate.ts";

/** A repeated key with another body: most likely a key reused for other work, which its order is not. */
const keyReused = (reuse: KeyReuse, at: string) => new ApiError(422, "idempotency_key_reused", describeReuse(reuse), at);

const cancelBody = z.strictObject({ reason: z.string().min(1).max(1024).default("cancelled by request") });

export function workOrderRoutes(services: Services) {
  const { db, bus } = services;
  const enqueuer = new Enqueuer(db, services.dispatcher);
  const found = async (id: string) => {
    const row = await workOrderGet(db, id);
    if (!row) throw ApiError.notFound("work order", id);
    return row;
  };

  return new Hono<AuthEnv>()
    .use(allow("ci"))
    .post("/", async (c) => {
      noQuery(c);
      const order = await body(c, workOrderCreate);
      const { row, created, reused } = await enqueuer.enqueue(order);
      if (reused) throw keyReused(reused, "idempotencyKey");
      // Created claimed, it went straight to an agent: only its followers need to know.
      if (created && row.state === "claimed") bus.emit("changed", row.id);
      else if (created) bus.emit("enqueued", [{ id: row.id, selector: row.selector, targetAgent: row.target_agent }]);
      return c.json(workOrderView(row), created ? 201 : 200);
    })
    .post("/bulk", async (c) => {
      noQuery(c);
      const { count, item } = await itemsBody(c, workOrderBulk, "workOrders", { maxBytes: MAX_BULK_BODY_BYTES, maxItems: MAX_BULK_ORDERS });
      const valid = (from: number, to: number) => validItems(workOrderCreate, item, from, to, "workOrders");
      const { ids, created } = await workOrderInsertChunked(db, count, valid).catch((error: unknown) => {
        throw error instanceof KeyReused ? keyReused(error.reuse, `workOrders.${error.index}.idempotencyKey`) : error;
      });
      if (created.length > 0) bus.emit("enqueued", created);
      return c.json({ ids, created: created.length }, 201);
    })
    .get("/", async (c) => {
      const filter = query(c, workOrderQuery);
      const { items, next } = page(await workOrderList(db, filter), filter.limit, (row) => row.id);
      return c.json({ items: items.map(workOrderView), next });
    })
    .get("/:id", async (c) => {
      noQuery(c);
      const row = await found(idParam(c));
      const events = await workOrderEvents(db, row.id);
      return c.json({
        ...workOrderView(row),
        events: events.map((e) => ({
          at: iso(e.at),
          jobId: e.job_id,
          from: e.from_state,
          to: e.to_state,
          reason: e.reason,
        })),
      });
    })
    .post("/:id/cancel", async (c) => {
      noQuery(c);
      const id = idParam(c);
      const { reason } = await body(c, cancelBody, { orElse: {} });
      const outcome = await workOrderCancel(db, id, reason);
      if (outcome.kind === "requested") bus.emit("cancel", outcome);
      const row = await found(id);
      if (outcome.kind === "not_active") {
        throw new ApiError(409, "conflict", `work order ${id} has already ended (${row.state})`);
      }
      bus.emit("changed", id);
      return c.json(workOrderView(row), outcome.kind === "cancelled" ? 200 : 202);
    })
    .get("/:id/log", async (c) => {
      const { offset, follow } = query(c, logQuery);
      const row = await found(idParam(c));
      return logResponse(c, services, { workOrderId: row.id }, offset, follow);
    });
}
