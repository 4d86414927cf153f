// Logs over HTTP: plain text from an offset, and followed as server-sent events until the job ends.
// Jobs are set up directly through the SQL modules an agent session uses.
import { setTimeout } from "node:timers/promises";
import { describe, expect, it, vi } from "vitest";
import type { JobView, LogEvent, WorkOrderView } from "../../protocol/api.ts";
import type { JobMessage } from "../../protocol/messages.ts";
import { followLog } from "../../coordinator/logs/follow.ts";
import { agentConnect } from "../../coordinator/sql/agent-session.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { EventReader, execOrder, expectError, MAX_FOLLOWERS, parseEvents, type ServerSentEvent, useHarness } from "./harness.ts";
import { jobApply } from "../store/fixtures.ts";

const h = useHarness();

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

type Job = {
  workOrderId: string;
  jobId: string;
  agentId: string;
  /** Applies the next message of this job as its agent would send it. */
  send(msg: DistributiveOmit<JobMessage, "jobId" | "seq">): Promise<void>;
  /** Appends a log chunk. */
  log(data: string): Promise<void>;
};

let agents = 0;

/** A work order enqueued over HTTP for its own agent, and claimed by that agent: one claimed job. */
async function claimedJob(order: Record<string, unknown> = {}): Promise<Job & { next(): Promise<Job> }> {
  const name = `log-agent-${++agents}`;
  const agentId = (await agentConnect(
    h.services.db,
    { name, labels: {}, capacity: 1, mode: "work-order", version: "test" },
    `session-${name}`,
  ))!.id;
  const response = await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder({ agent: name, ...order }) });
  expect(response.status).toBe(201);
  const { id: workOrderId } = (await response.json()) as WorkOrderView;
  /** The agent claims the work order (again, once its job before has ended for a retry). */
  const claim = async (): Promise<Job> => {
    const assignments = await workOrderClaim(h.services.db, { agentId, name, labels: {}, queueMode: false }, 1);
    expect(assignments.map((a) => a.workOrderId)).toEqual([workOrderId]);
    const jobId = String(assignments[0]!.jobId);
    let seq = 0;
    const send: Job["send"] = async (msg) => {
      const applied = await jobApply(h.services.db, agentId, { ...msg, jobId, seq: ++seq } as JobMessage);
      expect(applied).toMatchObject({ kind: "applied", workOrderId });
    };
    return { workOrderId, jobId, agentId, send, log: (data) => send({ type: "job.log", data }) };
  };
  return { ...(await claim()), next: claim };
}

const CHUNKS = ["line 1\n", "ünïcödé 2\n", "line 3\n"];
const WHOLE = CHUNKS.join("");

/** A job that ran, logged CHUNKS and succeeded. */
async function endedJob(): Promise<Job> {
  const job = await claimedJob();
  await job.send({ type: "job.started" });
  for (const chunk of CHUNKS) await job.log(chunk);
  await job.send({ type: "job.finished", outcome: "succeeded", exitCode: 0 });
  return job;
}

async function text(path: string): Promise<string> {
  const response = await h.request(path, { token: h.tokens.ci });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain/);
  return response.text();
}

const logEvents = (events: { event: string; data: string }[]) =>
  events.map((e) => ({ event: e.event, data: JSON.parse(e.data) as LogEvent }));

describe("plain logs", () => {
  it("a work order with no job yet has an empty log", async () => {
    const response = await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder() });
    const { id } = (await response.json()) as WorkOrderView;
    expect(await text(`/v1/work-orders/${id}/log`)).toBe("");
    expect(await text(`/v1/work-orders/${id}/log?follow=false`)).toBe("");
  });

  it("GET /v1/jobs/:id/log returns the whole log; ?offset=N (bytes) the rest", async () => {
    const job = await endedJob();
    expect(await text(`/v1/jobs/${job.jobId}/log`)).toBe(WHOLE);
    const firstTwo = Buffer.byteLength(CHUNKS[0]! + CHUNKS[1]!);
    expect(await text(`/v1/jobs/${job.jobId}/log?offset=${firstTwo}`)).toBe(CHUNKS[2]);
    expect(await text(`/v1/jobs/${job.jobId}/log?offset=3`)).toBe(WHOLE.slice(3));
    expect(await text(`/v1/jobs/${job.jobId}/log?offset=${Buffer.byteLength(WHOLE)}`)).toBe("");
    expect(await text(`/v1/jobs/${job.jobId}/log?offset=${Buffer.byteLength(WHOLE) + 100}`)).toBe("");
  });

  it("GET /v1/work-orders/:id/log returns the log of its latest job", async () => {
    const job = await endedJob();
    expect(await text(`/v1/work-orders/${job.workOrderId}/log`)).toBe(WHOLE);
    expect(await text(`/v1/work-orders/${job.workOrderId}/log?offset=7`)).toBe(WHOLE.slice(7));
  });

  it("a plain read the client abandons midway lets go of the work order", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    for (let i = 0; i < 300; i++) await job.log(`line ${i}\n`);
    const response = await h.request(`/v1/jobs/${job.jobId}/log`, { token: h.tokens.ci });
    const reader = response.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    await reader.cancel();
    await vi.waitFor(() => expect(h.services.bus.watched()).not.toContain(job.workOrderId));
  });

  it("a running job's log so far, without waiting for more", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    await job.log("so far\n");
    expect(await text(`/v1/jobs/${job.jobId}/log`)).toBe("so far\n");
  });

  it("GET /v1/jobs/:id shows the job", async () => {
    const job = await endedJob();
    const response = await h.request(`/v1/jobs/${job.jobId}`, { token: h.tokens.ci });
    expect(response.status).toBe(200);
    const view = (await response.json()) as JobView;
    expect(view).toMatchObject({
      id: job.jobId,
      workOrderId: job.workOrderId,
      attempt: 1,
      state: "succeeded",
      exitCode: 0,
      logBytes: Buffer.byteLength(WHOLE),
    });
    const { items } = (await (await h.request(`/v1/jobs?workOrder=${job.workOrderId}`)).json()) as { items: JobView[] };
    expect(items.map((j) => j.id)).toEqual([job.jobId]);
  });
});

describe("followed logs", () => {
  it("an ended job's log is job, log…, end, and then the stream closes", async () => {
    const job = await endedJob();
    const response = await h.request(`/v1/jobs/${job.jobId}/log?follow=true`, { token: h.tokens.ci });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = logEvents(parseEvents(await response.text()));

    expect(events[0]).toEqual({ event: "job", data: { type: "job", jobId: job.jobId, attempt: 1, offset: 0 } });
    expect(events.at(-1)).toEqual({ event: "end", data: { type: "end", state: "succeeded", exitCode: 0 } });
    const logs = events.slice(1, -1);
    expect(logs.every((e) => e.event === "log" && e.data.type === "log" && e.data.jobId === job.jobId)).toBe(true);
    expect(logs.map((e) => (e.data as { data: string }).data).join("")).toBe(WHOLE);
    expect(logs.map((e) => (e.data as { offset: number }).offset)).toEqual([
      0,
      Buffer.byteLength(CHUNKS[0]!),
      Buffer.byteLength(CHUNKS[0]! + CHUNKS[1]!),
    ]);
  });

  it("follows from an offset, and through the work order route", async () => {
    const job = await endedJob();
    const response = await h.request(`/v1/work-orders/${job.workOrderId}/log?follow=1&offset=${Buffer.byteLength(CHUNKS[0]!)}`, {
      token: h.tokens.ci,
    });
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = logEvents(parseEvents(await response.text()));
    expect(events.map((e) => e.event)).toEqual(["job", "log", "log", "end"]);
    expect(events.filter((e) => e.data.type === "log").map((e) => (e.data as { data: string }).data).join("")).toBe(
      CHUNKS[1]! + CHUNKS[2]!,
    );
  });

  it("a cancelled work order that never ran ends at once", async () => {
    const { id } = (await (await h.request("/v1/work-orders", { json: execOrder() })).json()) as WorkOrderView;
    expect((await h.request(`/v1/work-orders/${id}/cancel`, { method: "POST" })).status).toBe(200);
    const events = logEvents(parseEvents(await (await h.request(`/v1/work-orders/${id}/log?follow=true`)).text()));
    expect(events).toEqual([{ event: "end", data: { type: "end", state: "cancelled", exitCode: null } }]);
  });

  it("a running job's follower receives what is appended after it started, then the end", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    await job.log("before\n");

    const response = await h.request(`/v1/jobs/${job.jobId}/log?follow=true`, { token: h.tokens.ci });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const reader = new EventReader(response.body!);
    const next = async () => {
      const event = await reader.next();
      expect(event).toBeDefined();
      return { event: event!.event, data: JSON.parse(event!.data) as LogEvent };
    };
    try {
      expect(await next()).toEqual({ event: "job", data: { type: "job", jobId: job.jobId, attempt: 1, offset: 0 } });
      expect(await next()).toEqual({ event: "log", data: { type: "log", jobId: job.jobId, offset: 0, data: "before\n" } });

      // The follower has sent everything there was; now the agent sends more.
      await job.log("after\n");
      h.services.bus.emit("changed", job.workOrderId);
      expect(await next()).toEqual({ event: "log", data: { type: "log", jobId: job.jobId, offset: 7, data: "after\n" } });

      // A change to another work order wakes nobody here; the job's own end does.
      h.services.bus.emit("changed", "999999999");
      await job.log("last\n");
      await job.send({ type: "job.finished", outcome: "failed", exitCode: 2, error: "exit status 2" });
      h.services.bus.emit("changed", job.workOrderId);
      expect(await next()).toEqual({ event: "log", data: { type: "log", jobId: job.jobId, offset: 13, data: "last\n" } });
      expect(await next()).toEqual({ event: "end", data: { type: "end", state: "failed", exitCode: 2, error: "exit status 2" } });
      expect(await reader.next()).toBeUndefined();
    } finally {
      await reader.cancel();
    }
  });

  it("a work order's follower sees its job start: job, log, end", async () => {
    const response = await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder({ agent: "late-agent" }) });
    const { id: workOrderId } = (await response.json()) as WorkOrderView;

    const follow = await h.request(`/v1/work-orders/${workOrderId}/log?follow=true`, { token: h.tokens.ci });
    expect(follow.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const reader = new EventReader(follow.body!);
    try {
      const agentId = (await agentConnect(
        h.services.db,
        { name: "late-agent", labels: {}, capacity: 1, mode: "work-order", version: "test" },
        "session-late",
      ))!.id;
      const [assignment] = await workOrderClaim(h.services.db, { agentId, name: "late-agent", labels: {}, queueMode: false }, 1);
      const jobId = String(assignment!.jobId);
      h.services.bus.emit("changed", workOrderId);
      expect(await reader.next()).toEqual({ event: "job", data: JSON.stringify({ type: "job", jobId, attempt: 1, offset: 0 }), id: `${jobId}:0` });

      let seq = 0;
      const send = (msg: DistributiveOmit<JobMessage, "jobId" | "seq">) =>
        jobApply(h.services.db, agentId, { ...msg, jobId, seq: ++seq } as JobMessage);
      await send({ type: "job.started" });
      await send({ type: "job.log", data: "hi\n" });
      h.services.bus.emit("changed", workOrderId);
      const log = await reader.next();
      expect(JSON.parse(log!.data)).toEqual({ type: "log", jobId, offset: 0, data: "hi\n" });

      await send({ type: "job.finished", outcome: "succeeded", exitCode: 0 });
      h.services.bus.emit("changed", workOrderId);
      expect(JSON.parse((await reader.next())!.data)).toEqual({ type: "end", state: "succeeded", exitCode: 0 });
      expect(await reader.next()).toBeUndefined();
    } finally {
      await reader.cancel();
    }
  });

  it("a follower that hangs up stops following: it lets go of the bus", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    const bus = h.services.bus;
    const watch = bus.watch.bind(bus);
    let released!: () => void;
    const letGo = new Promise<void>((resolve) => (released = resolve));
    bus.watch = (workOrderId, listener) => {
      const off = watch(workOrderId, listener);
      return () => {
        off();
        released();
      };
    };
    try {
      const response = await h.request(`/v1/jobs/${job.jobId}/log?follow=true`, { token: h.tokens.ci });
      const reader = new EventReader(response.body!);
      expect((await reader.next())?.event).toBe("job");
      await reader.cancel();
      await letGo;
    } finally {
      delete (bus as { watch?: unknown }).watch;
    }
    expect(bus.watch).toBe(Object.getPrototypeOf(bus).watch);
    await job.log("nobody listens\n");
    h.services.bus.emit("changed", job.workOrderId);
    expect(await text(`/v1/jobs/${job.jobId}/log`)).toBe("nobody listens\n");
  });

  it("a HEAD of a follow is answered without one, so it holds no follower's place", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    const path = `/v1/jobs/${job.jobId}/log?follow=true`;
    for (let i = 0; i <= MAX_FOLLOWERS; i++) {
      const head = await h.request(path, { token: h.tokens.ci, method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-type")).toMatch(/^text\/event-stream/);
    }
    const follow = await h.request(path, { token: h.tokens.ci });
    expect(follow.status).toBe(200);
    await follow.body!.cancel();
  });

  it("followers past the bound are turned away with 503 and Retry-After until one leaves", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    const follow = () => h.request(`/v1/jobs/${job.jobId}/log?follow=true`, { token: h.tokens.ci });
    const readers: EventReader[] = [];
    for (let i = 0; i < MAX_FOLLOWERS; i++) {
      const reader = new EventReader((await follow()).body!);
      expect((await reader.next())?.event).toBe("job");
      readers.push(reader);
    }
    const full = await follow();
    expect(full.headers.get("retry-after")).toBe("5");
    await expectError(full, 503, "too_many_followers");
    // A plain read holds no place.
    expect(await text(`/v1/jobs/${job.jobId}/log`)).toBe("");

    await readers.pop()!.cancel();
    const again = await vi.waitFor(async () => {
      const response = await follow();
      expect(response.status).toBe(200);
      return new EventReader(response.body!);
    });
    expect((await again.next())?.event).toBe("job");
    await job.send({ type: "job.finished", outcome: "succeeded", exitCode: 0 });
    for (const reader of [...readers, again]) expect(await reader.next()).toMatchObject({ event: "end" });
    // Ended streams give their places back.
    await vi.waitFor(async () => expect((await follow()).status).toBe(200));
  });
});

describe("cancelling a job in progress", () => {
  it("is 202: the job is marked and its agent is asked to stop it", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    const requests: unknown[] = [];
    const unsubscribe = h.services.bus.on("cancel", (request) => requests.push(request));
    try {
      const response = await h.request(`/v1/work-orders/${job.workOrderId}/cancel`, {
        token: h.tokens.ci,
        json: { reason: "stop it" },
      });
      expect(response.status).toBe(202);
      expect(((await response.json()) as WorkOrderView).state).toBe("running");
      expect(requests).toEqual([expect.objectContaining({ jobId: job.jobId, agentId: job.agentId, reason: "stop it" })]);
    } finally {
      unsubscribe();
    }
    await job.send({ type: "job.finished", outcome: "cancelled", exitCode: null });
    const again = await h.request(`/v1/work-orders/${job.workOrderId}/cancel`, { method: "POST" });
    await expectError(again, 409, "conflict");
  });

  it("each job and log event's id is where the log resumes after it", async () => {
    const job = await endedJob();
    const events = parseEvents(await (await h.request(`/v1/jobs/${job.jobId}/log?follow=true`)).text());
    const after = (n: number) => `${job.jobId}:${Buffer.byteLength(CHUNKS.slice(0, n).join(""))}`;
    expect(events.map((e) => [e.event, e.id])).toEqual([
      ["job", after(0)],
      ["log", after(1)],
      ["log", after(2)],
      ["log", after(3)],
      ["end", undefined],
    ]);
  });

  it("a follower that reconnects with Last-Event-ID carries on after that event", async () => {
    const job = await endedJob();
    for (const path of [`/v1/jobs/${job.jobId}/log?follow=true`, `/v1/work-orders/${job.workOrderId}/log?follow=true`]) {
      const first = parseEvents(await (await h.request(path)).text());
      const resumed = logEvents(parseEvents(await (await h.request(path, { headers: { "last-event-id": first[1]!.id! } })).text()));
      expect(resumed.map((e) => e.event)).toEqual(["log", "log", "end"]);
      expect(resumed.map((e) => (e.data.type === "log" ? e.data.data : "")).join("")).toBe(CHUNKS[1]! + CHUNKS[2]!);
    }
  });

  it("takes back as Last-Event-ID the id of an event at any offset it serves from, up to the largest", async () => {
    const job = await endedJob();
    for (const offset of [10 ** 15, Number.MAX_SAFE_INTEGER]) {
      const [event] = parseEvents(await (await h.request(`/v1/jobs/${job.jobId}/log?follow=true&offset=${offset}`)).text());
      expect(event).toMatchObject({ event: "job", id: `${job.jobId}:${offset}` });
      const resumed = await h.request(`/v1/jobs/${job.jobId}/log?follow=true`, { headers: { "last-event-id": event!.id! } });
      expect(logEvents(parseEvents(await resumed.text())).map((e) => e.event)).toEqual(["end"]);
    }
    await expectError(await h.request(`/v1/jobs/${job.jobId}/log?follow=true`, { headers: { "last-event-id": `${job.jobId}:${Number.MAX_SAFE_INTEGER + 1}` } }), 400, "invalid_request", "Last-Event-ID");
  });

  /** A work order whose first job logged a1 and a2 and failed, and whose retry logged b1 and succeeded. */
  async function retriedWorkOrder(during?: (first: Job) => Promise<void>) {
    const first = await claimedJob({ maxAttempts: 2, retryOn: ["failed"], retryBackoffSeconds: 0 });
    await first.send({ type: "job.started" });
    await first.log("a1\n");
    await during?.(first);
    await first.log("a2\n");
    await first.send({ type: "job.finished", outcome: "failed", exitCode: 1 });
    const second = await first.next();
    await second.send({ type: "job.started" });
    await second.log("b1\n");
    await second.send({ type: "job.finished", outcome: "succeeded", exitCode: 0 });
    h.services.bus.emit("changed", first.workOrderId);
    return { first, second };
  }

  const retriedLog = (first: Job, second: Job, from: "a1" | "a2") => [
    ...(from === "a1" ? [{ event: "job", data: { type: "job", jobId: first.jobId, attempt: 1, offset: 0 } }] : []),
    ...(from === "a1" ? [{ event: "log", data: { type: "log", jobId: first.jobId, offset: 0, data: "a1\n" } }] : []),
    { event: "log", data: { type: "log", jobId: first.jobId, offset: 3, data: "a2\n" } },
    { event: "job", data: { type: "job", jobId: second.jobId, attempt: 2, offset: 0 } },
    { event: "log", data: { type: "log", jobId: second.jobId, offset: 0, data: "b1\n" } },
    { event: "end", data: { type: "end", state: "succeeded", exitCode: 0 } },
  ];

  it("a work order's follower gets the rest of a failed job's log before its retry's", async () => {
    let reader: EventReader | undefined;
    const seen: ServerSentEvent[] = [];
    const { first, second } = await retriedWorkOrder(async (job) => {
      // Following live: the follower has read a1, and is next woken only once the retry has run.
      reader = new EventReader((await h.request(`/v1/work-orders/${job.workOrderId}/log?follow=true`)).body!);
      seen.push((await reader.next())!, (await reader.next())!);
      // Time to find nothing more and wait to be woken (were it not, a2 would be read as before).
      await setTimeout(100);
    });
    try {
      for (let event = await reader!.next(); event; event = await reader!.next()) seen.push(event);
    } finally {
      await reader!.cancel();
    }
    expect(logEvents(seen)).toEqual(retriedLog(first, second, "a1"));
  });

  it("a follower asking for an offset while the latest job was handed back unbegun reads from it in the attempt that runs", async () => {
    const first = await claimedJob();
    await first.send({ type: "job.finished", outcome: "returned", exitCode: null });
    const reader = new EventReader((await h.request(`/v1/work-orders/${first.workOrderId}/log?follow=true&offset=6`)).body!);
    try {
      const second = await first.next();
      await second.send({ type: "job.started" });
      await second.log("hello world\n");
      await second.send({ type: "job.finished", outcome: "succeeded", exitCode: 0 });
      h.services.bus.emit("changed", first.workOrderId);
      const seen: ServerSentEvent[] = [];
      for (let event = await reader.next(); event; event = await reader.next()) seen.push(event);
      expect(seen.map((e) => JSON.parse(e.data))).toEqual([
        { type: "job", jobId: second.jobId, attempt: 1, offset: 6 },
        { type: "log", jobId: second.jobId, offset: 6, data: "world\n" },
        { type: "end", state: "succeeded", exitCode: 0 },
      ]);
    } finally {
      await reader.cancel();
    }
  });

  it("Last-Event-ID of a job before a retry resumes in that job, then goes on to the retry", async () => {
    const { first, second } = await retriedWorkOrder();
    const response = await h.request(`/v1/work-orders/${first.workOrderId}/log?follow=true`, { headers: { "last-event-id": `${first.jobId}:3` } });
    expect(logEvents(parseEvents(await response.text()))).toEqual(retriedLog(first, second, "a2"));
  });

  it("a follower resuming two attempts back reads the attempt between, not only the latest", async () => {
    const first = await claimedJob({ maxAttempts: 3, retryOn: ["failed"], retryBackoffSeconds: 0 });
    const jobs = [first as Job];
    for (const [i, line] of ["a\n", "b\n", "c\n"].entries()) {
      const job = i === 0 ? first : await first.next();
      if (i > 0) jobs.push(job);
      await job.send({ type: "job.started" });
      await job.log(line);
      await job.send({ type: "job.finished", outcome: i < 2 ? "failed" : "succeeded", exitCode: i < 2 ? 1 : 0 });
    }
    const response = await h.request(`/v1/work-orders/${first.workOrderId}/log?follow=true`, { headers: { "last-event-id": `${first.jobId}:2` } });
    expect(logEvents(parseEvents(await response.text()))).toEqual([
      { event: "job", data: { type: "job", jobId: jobs[1]!.jobId, attempt: 2, offset: 0 } },
      { event: "log", data: { type: "log", jobId: jobs[1]!.jobId, offset: 0, data: "b\n" } },
      { event: "job", data: { type: "job", jobId: jobs[2]!.jobId, attempt: 3, offset: 0 } },
      { event: "log", data: { type: "log", jobId: jobs[2]!.jobId, offset: 0, data: "c\n" } },
      { event: "end", data: { type: "end", state: "succeeded", exitCode: 0 } },
    ]);
  });

  it("refuses a Last-Event-ID that is not an event of this log, naming the header", async () => {
    const job = await endedJob();
    const other = await endedJob();
    const follow = (path: string, id: string) => h.request(`${path}/log?follow=true`, { headers: { "last-event-id": id } });
    for (const bad of ["7", "x:1", `${job.jobId}:-1`, `${job.jobId}:1.5`, "99999999999999999999:0"]) {
      expect((await expectError(await follow(`/v1/jobs/${job.jobId}`, bad), 400, "invalid_request", "Last-Event-ID")).message).toMatch(/JOB:OFFSET|numeric id/);
    }
    await expectError(await follow(`/v1/jobs/${job.jobId}`, `${other.jobId}:0`), 400, "invalid_request", "Last-Event-ID");
    await expectError(await follow(`/v1/work-orders/${job.workOrderId}`, `${other.jobId}:0`), 400, "invalid_request", "Last-Event-ID");
    await expectError(await follow(`/v1/work-orders/${job.workOrderId}`, "123456789:0"), 400, "invalid_request", "Last-Event-ID");
  });

  it("a follower whose wake-up was lost looks again anyway", async () => {
    const job = await claimedJob();
    await job.send({ type: "job.started" });
    const abort = new AbortController();
    const events = followLog(h.services.db, h.services.bus, { workOrderId: job.workOrderId }, { offset: 0, follow: true, signal: abort.signal, recheckMs: 50 });
    try {
      expect((await events.next()).value).toMatchObject({ type: "job" });
      const next = events.next();
      // Nothing tells the follower (as when a NOTIFY between replicas fails).
      await job.log("late\n");
      await job.send({ type: "job.finished", outcome: "succeeded", exitCode: 0 });
      expect((await next).value).toEqual({ type: "log", jobId: job.jobId, offset: 0, data: "late\n" });
      expect((await events.next()).value).toEqual({ type: "end", state: "succeeded", exitCode: 0 });
    } finally {
      abort.abort();
      await events.return(undefined);
    }
  });
});

describe("a plain log read while the database goes away", () => {
  it("is 503 when the database cannot be reached as it begins, and a broken answer, not a short log, when it goes later", async () => {
    const job = await endedJob();
    const db = h.services.db;
    const query = db.query;
    // The nth read of the log fails as when the database server shuts down.
    const failingRead = (nth: number) => {
      let reads = 0;
      db.query = (async (text: string, params?: unknown[]) => {
        if (text.includes("FROM job_logs") && ++reads === nth) throw Object.assign(new Error("terminating connection"), { code: "57P01" });
        return query.call(db, text, params);
      }) as typeof db.query;
    };
    try {
      failingRead(1);
      await expectError(await h.request(`/v1/jobs/${job.jobId}/log`, { token: h.tokens.ci }), 503, "unavailable");
      failingRead(2);
      const response = await h.request(`/v1/jobs/${job.jobId}/log`, { token: h.tokens.ci });
      expect(response.status).toBe(200);
      await expect(response.text()).rejects.toThrow("terminating connection");
    } finally {
      db.query = query;
    }
  });
});

/** Attempt 1 logs "a\n" and fails; attempt 2 logs "b\n" and fails; attempt 3 is claimed and handed back unbegun. */
async function ranTwiceThenReturned(afterFirst?: (first: Job) => Promise<void>) {
  const first = await claimedJob({ maxAttempts: 3, retryOn: ["failed"], retryBackoffSeconds: 0 });
  const { workOrderId } = first;
  await first.send({ type: "job.started" });
  await first.send({ type: "job.log", data: "a\n" });
  await afterFirst?.(first);
  await first.send({ type: "job.finished", outcome: "failed", exitCode: 1 });
  const second = await first.next();
  await second.send({ type: "job.started" });
  await second.send({ type: "job.log", data: "b\n" });
  await second.send({ type: "job.finished", outcome: "failed", exitCode: 1 });
  const third = await first.next();
  await third.send({ type: "job.finished", outcome: "returned", exitCode: null });
  return { workOrderId, first, second, third };
}

// The snapshot of a work order passes a returned job by: a follower behind still reads every attempt that ran.
describe("a work order whose latest job was returned, then cancelled", () => {
  it("a follower resuming in attempt 1 (Last-Event-ID) reads attempt 2 before the end", async () => {
    const { workOrderId, first, second } = await ranTwiceThenReturned();
    expect((await h.request(`/v1/work-orders/${workOrderId}/cancel`, { method: "POST", token: h.tokens.ci })).status).toBe(200);
    const response = await h.request(`/v1/work-orders/${workOrderId}/log?follow=true`, { token: h.tokens.ci, headers: { "last-event-id": `${first.jobId}:2` } });
    expect(response.status).toBe(200);
    expect(logEvents(parseEvents(await response.text())).map((e) => e.data)).toEqual([
      { type: "job", jobId: second.jobId, attempt: 2, offset: 0 },
      { type: "log", jobId: second.jobId, offset: 0, data: "b\n" },
      { type: "end", state: "cancelled", exitCode: null },
    ]);
  });

  it("a live follower that was reading attempt 1 reads attempt 2 before the end", async () => {
    let reader: EventReader | undefined;
    const seen: ServerSentEvent[] = [];
    const { workOrderId, first, second } = await ranTwiceThenReturned(async (job) => {
      reader = new EventReader((await h.request(`/v1/work-orders/${job.workOrderId}/log?follow=true`, { token: h.tokens.ci })).body!);
      seen.push((await reader.next())!, (await reader.next())!); // job, "a\n"
      await setTimeout(100); // it waits to be woken
    });
    try {
      expect((await h.request(`/v1/work-orders/${workOrderId}/cancel`, { method: "POST", token: h.tokens.ci })).status).toBe(200);
      h.services.bus.emit("changed", workOrderId);
      for (let event = await reader!.next(); event; event = await reader!.next()) seen.push(event);
    } finally {
      await reader!.cancel();
    }
    expect(logEvents(seen).map((e) => e.data)).toEqual([
      { type: "job", jobId: first.jobId, attempt: 1, offset: 0 },
      { type: "log", jobId: first.jobId, offset: 0, data: "a\n" },
      { type: "job", jobId: second.jobId, attempt: 2, offset: 0 },
      { type: "log", jobId: second.jobId, offset: 0, data: "b\n" },
      { type: "end", state: "cancelled", exitCode: null },
    ]);
  });
});
