// Retention deleting a work order while its log is read. A large log is read a page (256 chunks) at
// a time, the answer streamed as the client takes it; the purge deletes the log between two pages.
// The client must not take what it got for the whole log: a plain read breaks, a follower gets no
// `end`, and asking again says the work order is gone. Found by a review.
import { expect, it } from "vitest";
import { purgeExpired } from "../../coordinator/sql/retention.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { jobApplyIn } from "../../coordinator/sql/job-apply.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { EventReader, useHarness } from "./harness.ts";
import { connectAgent, order, workOrderInsert } from "../store/fixtures.ts";

const h = useHarness();
const LINES = 600;
const line = (i: number) => `line ${String(i).padStart(5, "0")}\n`;

/** A succeeded work order with a log of LINES chunks, ended 40 days ago. */
async function oldWorkOrder(name: string) {
  const db = h.services.db;
  const agent = await connectAgent(db, name, {}, "work-order");
  const { row } = await workOrderInsert(db, order({ agent: name }));
  const [job] = await workOrderClaim(db, agent, 1);
  const messages: JobMessage[] = [{ type: "job.started", jobId: job!.jobId, seq: 1 }];
  for (let i = 0; i < LINES; i++) messages.push({ type: "job.log", jobId: job!.jobId, seq: i + 2, data: line(i) });
  messages.push({ type: "job.finished", jobId: job!.jobId, seq: LINES + 2, outcome: "succeeded", exitCode: 0 });
  await db.transaction((tx) => jobApplyIn(tx, messages.map((message) => ({ agentId: agent.agentId, message }))));
  await db.query(`UPDATE work_orders SET created_at = now() - interval '40 days', updated_at = now() - interval '40 days' WHERE id = $1`, [row.id]);
  return row.id;
}

async function gone(path: string) {
  const response = await h.request(path, { token: h.tokens.ci });
  expect(response.status).toBe(404);
  expect(await response.json()).toMatchObject({ error: { code: "not_found" } });
}

it("a plain read of a log that retention deletes mid-read breaks, instead of ending as if whole", async () => {
  const id = await oldWorkOrder("purge-read");
  const response = await h.request(`/v1/work-orders/${id}/log`, { token: h.tokens.ci });
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value, { stream: true });
  expect((await purgeExpired(h.services.db, 30)).workOrders).toBe(1);
  const broken = await (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return undefined;
      text += decoder.decode(value, { stream: true });
    }
  })().catch((error: Error) => error);
  expect(String(broken)).toMatch(/work order \d+ was deleted \(its retention ran out\) while its log was read/);
  expect(text.length).toBeLessThan(LINES * line(0).length);
  await gone(`/v1/work-orders/${id}/log`);
});

it("a follower of a log that retention deletes mid-read gets no `end`, and is told the work order is gone when it asks again", async () => {
  const id = await oldWorkOrder("purge-follow");
  const response = await h.request(`/v1/work-orders/${id}/log?follow=true`, { token: h.tokens.ci });
  const reader = new EventReader(response.body!);
  expect((await reader.next())?.event).toBe("job");
  expect((await reader.next())?.event).toBe("log");
  expect((await purgeExpired(h.services.db, 30)).workOrders).toBe(1);
  const events: string[] = [];
  for (let event = await reader.next(); event; event = await reader.next()) events.push(event.event);
  expect(events).not.toContain("end");
  expect(events.length).toBeLessThan(LINES);
  await gone(`/v1/work-orders/${id}/log?follow=true`);
});
