// Work orders over HTTP: enqueue, read, list, cancel, and every way a request can be wrong.
import { beforeAll, describe, expect, it } from "vitest";
import type { WorkOrderEventView, WorkOrderView } from "../../protocol/api.ts";
import { MAX_BODY_BYTES } from "../../protocol/limits.ts";
import { execOrder, expectError, useHarness } from "./harness.ts";

const h = useHarness();

type Detail = WorkOrderView & { events: WorkOrderEventView[] };
type Page = { items: WorkOrderView[]; next: string | null };

async function enqueue(extra: Record<string, unknown> = {}): Promise<WorkOrderView> {
  const response = await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder(extra) });
  expect(response.status).toBe(201);
  return (await response.json()) as WorkOrderView;
}

async function list(params: Record<string, string>): Promise<Page> {
  const response = await h.request(`/v1/work-orders?${new URLSearchParams(params)}`, { token: h.tokens.ci });
  expect(response.status).toBe(200);
  return (await response.json()) as Page;
}

/** `[[…[]…]]`, `depth` arrays deep. */
const nested = (depth: number): unknown => (depth === 0 ? 1 : [nested(depth - 1)]);

describe("enqueue", () => {
  it("POST /v1/work-orders returns 201 and the view, with the selector in canonical form", async () => {
    const response = await h.request("/v1/work-orders", {
      token: h.tokens.ci,
      json: {
        adapter: "exec",
        spec: { command: ["make", "test"], env: { CI: "1" } },
        selector: "arch in (arm64,amd64),os=linux",
        labels: { repo: "jobfleet", branch: "main" },
        priority: 10,
        timeoutSeconds: 600,
        maxAttempts: 3,
        metadata: { commit: "abc123", pr: 7 },
      },
    });
    expect(response.status).toBe(201);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    const view = (await response.json()) as WorkOrderView;
    expect(view).toEqual({
      id: expect.stringMatching(/^[1-9][0-9]*$/),
      state: "pending",
      adapter: "exec",
      spec: { command: ["make", "test"], env: { CI: "1" } },
      selector: "arch in (amd64,arm64),os=linux",
      agent: null,
      labels: { repo: "jobfleet", branch: "main" },
      priority: 10,
      timeoutSeconds: 600,
      maxAttempts: 3,
      attempts: 0,
      retryOn: ["lost", "infrastructure"],
      retryBackoffSeconds: 10,
      queueTimeoutSeconds: null,
      runAfter: expect.any(String),
      idempotencyKey: null,
      metadata: { commit: "abc123", pr: 7 },
      createdAt: expect.any(String),
      updatedAt: expect.any(String),
      latestJob: null,
    });
    expect(new Date(view.createdAt).toISOString()).toBe(view.createdAt);
  });

  it("fills in the defaults", async () => {
    const view = await enqueue();
    expect(view).toMatchObject({
      adapter: "exec",
      spec: { command: ["echo", "hello"], env: {} },
      selector: "",
      agent: null,
      labels: {},
      priority: 0,
      timeoutSeconds: null,
      maxAttempts: 1,
      metadata: {},
    });
  });

  it("the same idempotencyKey returns 200 and the same work order", async () => {
    const first = await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder({ idempotencyKey: "build-42" }) });
    expect(first.status).toBe(201);
    const created = (await first.json()) as WorkOrderView;
    expect(created.idempotencyKey).toBe("build-42");

    const again = await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder({ idempotencyKey: "build-42" }) });
    expect(again.status).toBe(200);
    const repeated = (await again.json()) as WorkOrderView;
    expect(repeated.id).toBe(created.id);
    expect(repeated).toEqual(created);

    const { events } = (await (await h.request(`/v1/work-orders/${created.id}`)).json()) as Detail;
    expect(events).toHaveLength(1);
  });

  it("the same idempotencyKey with another body is 422 naming the key, the work order and the field that differs", async () => {
    const body = { spec: { command: ["make"], env: { A: "1", B: "2" } }, selector: "os=linux", metadata: { pipeline: 7 } };
    const first = (await (await h.request("/v1/work-orders", { token: h.tokens.ci, json: { ...body, idempotencyKey: "build-43" } })).json()) as WorkOrderView;
    // Equal as JSON values, as the selector's canonical text: the same request.
    const same = { spec: { env: { B: "2", A: "1" }, command: ["make"] }, selector: "os = linux", metadata: { pipeline: 7.0 }, idempotencyKey: "build-43" };
    expect((await h.request("/v1/work-orders", { token: h.tokens.ci, json: same })).status).toBe(200);

    const other = await h.request("/v1/work-orders", { token: h.tokens.ci, json: { ...body, spec: { command: ["make", "deploy"] }, idempotencyKey: "build-43" } });
    const error = await expectError(other, 422, "idempotency_key_reused", "idempotencyKey");
    expect(error).toMatchObject({ message: `idempotency key "build-43" names work order ${first.id}, enqueued with a different spec` });
    const another = await h.request("/v1/work-orders", { token: h.tokens.ci, json: { ...body, priority: 5, idempotencyKey: "build-43" } });
    expect((await expectError(another, 422, "idempotency_key_reused", "idempotencyKey")).message).toMatch(/different priority$/);
  });

  it("GET /v1/work-orders/:id returns the view with its events", async () => {
    const created = await enqueue({ labels: { kind: "detail" } });
    const response = await h.request(`/v1/work-orders/${created.id}`, { token: h.tokens.ci });
    expect(response.status).toBe(200);
    const detail = (await response.json()) as Detail;
    expect(detail).toEqual({ ...created, events: [expect.any(Object)] });
    expect(detail.events).toEqual([{ at: expect.any(String), jobId: null, from: null, to: "pending", reason: null }]);
    expect(new Date(detail.events[0]!.at).toISOString()).toBe(detail.events[0]!.at);
  });
});

describe("list", () => {
  let web1: WorkOrderView;
  let web2: WorkOrderView;
  let db1: WorkOrderView;
  let targeted: WorkOrderView;

  beforeAll(async () => {
    web1 = await enqueue({ labels: { suite: "list", team: "web" }, selector: "os=linux" });
    web2 = await enqueue({ labels: { suite: "list", team: "web", tier: "1" }, selector: "arch in (arm64,amd64),os=linux" });
    db1 = await enqueue({ labels: { suite: "list", team: "db" }, selector: "os=linux,arch=amd64" });
    targeted = await enqueue({ labels: { suite: "list", team: "ops" }, agent: "builder-1" });
  });

  const ids = (page: Page) => page.items.map((w) => w.id);

  it("lists newest first", async () => {
    expect(ids(await list({ labels: "suite=list" }))).toEqual([targeted.id, db1.id, web2.id, web1.id]);
  });

  it("filters by the work orders' own labels with a selector", async () => {
    expect(ids(await list({ labels: "suite=list,team=web" }))).toEqual([web2.id, web1.id]);
    expect(ids(await list({ labels: "suite=list,team in (db,ops)" }))).toEqual([targeted.id, db1.id]);
    expect(ids(await list({ labels: "suite=list,tier" }))).toEqual([web2.id]);
    expect(ids(await list({ labels: "suite=list,!tier,team!=ops" }))).toEqual([db1.id, web1.id]);
    expect(ids(await list({ labels: "suite=nothing-has-this" }))).toEqual([]);
  });

  it("filters by exact selector (one queue), after normalisation", async () => {
    expect(ids(await list({ labels: "suite=list", selector: "os=linux" }))).toEqual([web1.id]);
    expect(ids(await list({ labels: "suite=list", selector: "os==linux, arch in (amd64, arm64)" }))).toEqual([web2.id]);
    expect(ids(await list({ labels: "suite=list", selector: "arch=amd64,os=linux" }))).toEqual([db1.id]);
    expect(ids(await list({ labels: "suite=list", selector: "" }))).toEqual([targeted.id]);
  });

  it("filters by target agent", async () => {
    const page = await list({ agent: "builder-1" });
    expect(ids(page)).toEqual([targeted.id]);
    expect(page.items[0]!.agent).toBe("builder-1");
    expect(ids(await list({ agent: "builder-2" }))).toEqual([]);
  });

  it("filters by state", async () => {
    const cancelled = await h.request(`/v1/work-orders/${db1.id}/cancel`, { method: "POST", token: h.tokens.ci });
    expect(cancelled.status).toBe(200);
    expect(ids(await list({ labels: "suite=list", state: "cancelled" }))).toEqual([db1.id]);
    expect(ids(await list({ labels: "suite=list", state: "pending" }))).toEqual([targeted.id, web2.id, web1.id]);
    expect(ids(await list({ labels: "suite=list", state: "running" }))).toEqual([]);
  });

  it("pages with limit, next and before", async () => {
    const created: string[] = [];
    for (let i = 0; i < 5; i++) created.push((await enqueue({ labels: { suite: "paging", n: String(i) } })).id);
    const newestFirst = [...created].reverse();

    const seen: string[] = [];
    const pages: number[] = [];
    let before: string | null = null;
    for (let guard = 0; guard < 10; guard++) {
      const page: Page = await list({ labels: "suite=paging", limit: "2", ...(before ? { before } : {}) });
      pages.push(page.items.length);
      seen.push(...ids(page));
      if (page.next === null) break;
      expect(page.next).toBe(page.items.at(-1)!.id);
      before = page.next;
    }
    expect(pages).toEqual([2, 2, 1]);
    expect(seen).toEqual(newestFirst);
  });
});

describe("bad input", () => {
  const post = (init: { body?: string; json?: unknown; headers?: Record<string, string> }) =>
    h.request("/v1/work-orders", { method: "POST", token: h.tokens.ci, ...init });

  it("malformed JSON is 400 invalid_json", async () => {
    const error = await expectError(
      await post({ body: '{"spec": {', headers: { "content-type": "application/json" } }),
      400,
      "invalid_json",
    );
    expect(error.message).toMatch(/JSON/);
  });

  it.each([
    ["text/plain", { "content-type": "text/plain" }],
    ["form data", { "content-type": "application/x-www-form-urlencoded" }],
    ["no content type", {}],
  ])("a body sent as %s is 415", async (_, headers) => {
    await expectError(await post({ body: JSON.stringify(execOrder()), headers }), 415, "unsupported_media_type");
  });

  it("the media type is matched in any case", async () => {
    const response = await post({ body: JSON.stringify(execOrder()), headers: { "content-type": "Application/JSON; charset=utf-8" } });
    expect(response.status).toBe(201);
  });

  it.each<[string, unknown, string]>([
    ["an unknown top-level field", execOrder({ bogus: 1 }), "bogus"],
    ["an unknown field inside spec", { spec: { command: ["true"], bogus: 1 } }, "spec.bogus"],
    ["a string priority", execOrder({ priority: "high" }), "priority"],
    ["a fractional priority", execOrder({ priority: 1.5 }), "priority"],
    ["a priority over 1000", execOrder({ priority: 5000 }), "priority"],
    ["a priority under -1000", execOrder({ priority: -5000 }), "priority"],
    ["maxAttempts 0", execOrder({ maxAttempts: 0 }), "maxAttempts"],
    ["maxAttempts 101", execOrder({ maxAttempts: 101 }), "maxAttempts"],
    ["timeoutSeconds 0", execOrder({ timeoutSeconds: 0 }), "timeoutSeconds"],
    ["an unknown adapter", execOrder({ adapter: "docker" }), "adapter"],
    ["a spec without command or script", { spec: {} }, "spec.command"],
    ["a spec with both command and script", { spec: { command: ["true"], script: "true" } }, "spec.command"],
    ["a string command", { spec: { command: "echo hi" } }, "spec.command"],
    ["an empty command", { spec: { command: [] } }, "spec.command"],
    ["shell without script", { spec: { command: ["true"], shell: "bash" } }, "spec.shell"],
    ["a bad environment variable name", { spec: { command: ["true"], env: { "1BAD": "x" } } }, "spec.env.1BAD"],
    ["a bad target agent name", execOrder({ agent: "-nope" }), "agent"],
    ["a non-string label value", execOrder({ labels: { team: 7 } }), "labels.team"],
    ["an empty idempotencyKey", execOrder({ idempotencyKey: "" }), "idempotencyKey"],
    ["a non-string selector", execOrder({ selector: ["os=linux"] }), "selector"],
    ["a NUL character in metadata", execOrder({ metadata: { note: "a\u0000b" } }), "metadata.note"],
    ["a NUL character in a metadata key", execOrder({ metadata: { "k\u0000": 1 } }), "metadata.k\u0000"],
    ["a NUL character in an argument", { spec: { command: ["echo", "\u0000"] } }, "spec.command.1"],
    ["an unpaired surrogate in an environment value", { spec: { command: ["true"], env: { SECRET: "s3cr3t\ud800" } } }, "spec.env.SECRET"],
    ["an unpaired surrogate in a metadata key", execOrder({ metadata: { "k\udc00": 1 } }), "metadata.k\udc00"],
    ["an unpaired surrogate in an idempotency key", execOrder({ idempotencyKey: "\ud83d" }), "idempotencyKey"],
    // Own keys, as JSON.parse makes them: a schema would drop them without a word.
    ["a __proto__ key in metadata", execOrder({ metadata: JSON.parse('{"__proto__": {"a": 1}, "keep": 1}') }), "metadata.__proto__"],
    ["a __proto__ key in the environment", { spec: { command: ["true"], env: JSON.parse('{"__proto__": "x"}') } }, "spec.env.__proto__"],
    // The body is 64 deep where this nests 62 arrays into metadata.deep; 2,000 once overflowed the stack.
    ["metadata nested 65 deep", execOrder({ metadata: { deep: nested(65) } }), `metadata.deep${".0".repeat(62)}`],
    ["metadata nested 2,000 deep", execOrder({ metadata: { deep: nested(2000) } }), `metadata.deep${".0".repeat(62)}`],
  ])("%s is 400 naming the field", async (_, json, field) => {
    const error = await expectError(await post({ json }), 400, "invalid_request", field);
    expect(error.message.startsWith(`${field}: `)).toBe(true);
  });

  it("a work order without a spec is 400 naming spec, and saying it is required", async () => {
    const error = await expectError(await post({ json: {} }), 400, "invalid_request", "spec");
    expect(error.message).toBe("spec: required");
  });

  it("a bad label key is 400 saying what is wrong with it, not only that it is a bad key", async () => {
    const error = await expectError(await post({ json: execOrder({ labels: { "-x": "y" } }) }), 400, "invalid_request", "labels.-x");
    expect(error.message).toBe("labels.-x: invalid label key");
  });

  it.each([["[]"], ["null"], ['"text"'], ["42"]])("a body that is not an object (%s) is 400", async (body) => {
    await expectError(await post({ body, headers: { "content-type": "application/json" } }), 400, "invalid_request");
  });

  it("a bad selector is 400 naming the field and the position", async () => {
    const error = await expectError(await post({ json: execOrder({ selector: "os in (linux" }) }), 400, "invalid_request", "selector");
    expect(error.message).toContain("position");
    const other = await expectError(await post({ json: execOrder({ selector: "os=linux,,arch" }) }), 400, "invalid_request", "selector");
    expect(other.message).toContain("position");
  });

  it("a body over 1 MiB is 413", async () => {
    const huge = JSON.stringify(execOrder({ metadata: { blob: "x".repeat(MAX_BODY_BYTES) } }));
    const error = await expectError(await post({ body: huge, headers: { "content-type": "application/json" } }), 413, "payload_too_large");
    expect(error.message).toContain(String(MAX_BODY_BYTES));
  });

  it("a body over 1 MiB is 413 when its Content-Length says so too", async () => {
    const huge = JSON.stringify(execOrder({ metadata: { blob: "x".repeat(MAX_BODY_BYTES) } }));
    const headers = { "content-type": "application/json", "content-length": String(Buffer.byteLength(huge)) };
    await expectError(await post({ body: huge, headers }), 413, "payload_too_large");
  });

  it("a body of exactly the limit is read", async () => {
    // Padded with whitespace: no field of a work order may hold that much.
    const base = JSON.stringify(execOrder());
    const body = base + " ".repeat(MAX_BODY_BYTES - base.length);
    expect(Buffer.byteLength(body)).toBe(MAX_BODY_BYTES);
    const response = await post({ body, headers: { "content-type": "application/json" } });
    expect(response.status).toBe(201);
  });

  it("a bad id in the path is 400 naming it; an unknown id is 404", async () => {
    await expectError(await h.request("/v1/work-orders/abc"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/work-orders/0"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/work-orders/-1"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/work-orders/12345678901234567890"), 400, "invalid_request", "id");
    // 19 digits but above the largest bigint: refused here, not by the database (was a 500).
    await expectError(await h.request("/v1/work-orders/9223372036854775808"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/jobs/9999999999999999999/log"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/tokens/9999999999999999999", { method: "DELETE" }), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/work-orders/9223372036854775807"), 404, "not_found");
    await expectError(await h.request("/v1/work-orders/abc/cancel", { method: "POST" }), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/work-orders/abc/log"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/jobs/abc"), 400, "invalid_request", "id");
    await expectError(await h.request("/v1/work-orders/999999999"), 404, "not_found");
    await expectError(await h.request("/v1/work-orders/999999999/log"), 404, "not_found");
    await expectError(await h.request("/v1/jobs/999999999"), 404, "not_found");
    await expectError(await h.request("/v1/jobs/999999999/log"), 404, "not_found");
  });

  it.each([
    ["state=bogus", "state"],
    ["limit=0", "limit"],
    ["limit=501", "limit"],
    ["limit=ten", "limit"],
    ["before=abc", "before"],
    ["before=9999999999999999999", "before"],
    ["agent=-x", "agent"],
    ["selector=os%20in%20(linux", "selector"],
    ["labels=a%3D%3D%3D", "labels"],
    ["bogus=1", "bogus"],
  ])("a bad work order query (%s) is 400 naming the field", async (query, field) => {
    await expectError(await h.request(`/v1/work-orders?${query}`), 400, "invalid_request", field);
  });

  it.each([
    ["state=pending", "state"],
    ["workOrder=x", "workOrder"],
    ["limit=0", "limit"],
  ])("a bad job query (%s) is 400 naming the field", async (query, field) => {
    await expectError(await h.request(`/v1/jobs?${query}`), 400, "invalid_request", field);
  });

  it.each([
    ["offset=-1", "offset"],
    ["follow=yes", "follow"],
    ["tail=1", "tail"],
  ])("a bad log query (%s) is 400 naming the field", async (query, field) => {
    const { id } = await enqueue();
    await expectError(await h.request(`/v1/work-orders/${id}/log?${query}`), 400, "invalid_request", field);
  });

  it.each([
    ["/v1/work-orders?limit=0x10", "limit"],
    ["/v1/work-orders?limit=1e2", "limit"],
    ["/v1/work-orders?limit=%2010", "limit"],
    ["/v1/work-orders?limit=10.0", "limit"],
    ["/v1/work-orders?limit=", "limit"],
    ["/v1/jobs?limit=+5", "limit"],
    ["/v1/work-orders/1/log?offset=", "offset"],
    ["/v1/work-orders/1/log?offset=%20", "offset"],
    ["/v1/jobs/1/log?offset=0x10", "offset"],
    ["/v1/jobs/1/log?offset=1e3", "offset"],
  ])("a number in a query that is not plain decimal digits (%s) is 400 naming it", async (path, field) => {
    await expectError(await h.request(path), 400, "invalid_request", field);
  });

  it("numbers in decimal digits are taken", async () => {
    for (let i = 0; i < 11; i++) await enqueue();
    // Ten, not eight: a leading zero does not make it octal.
    expect((await list({ limit: "010" })).items.length).toBe(10);
    const { id } = await enqueue();
    expect((await h.request(`/v1/work-orders/${id}/log?offset=0`)).status).toBe(200);
  });

  it.each([
    ["/v1/work-orders?state=pending&state=bogus", "state"],
    ["/v1/work-orders?limit=5&limit=6", "limit"],
    ["/v1/jobs?workOrder=1&workOrder=2", "workOrder"],
    ["/v1/work-orders/1/log?follow=false&follow=true", "follow"],
  ])("a repeated query parameter (%s) is 400 naming it", async (path, field) => {
    const error = await expectError(await h.request(path), 400, "invalid_request", field);
    expect(error.message).toMatch(new RegExp(`^${field}: `));
  });

  it("an unknown route is a JSON 404", async () => {
    await expectError(await h.request("/v1/work-orders/1/retry", { method: "POST" }), 404, "not_found");
    await expectError(await h.request("/v2/work-orders"), 404, "not_found");
  });

  it("after all of that, the coordinator still serves a valid request", async () => {
    const created = await enqueue({ labels: { suite: "after-bad-input" } });
    expect(created.state).toBe("pending");
    expect((await list({ labels: "suite=after-bad-input" })).items.map((w) => w.id)).toEqual([created.id]);
    expect((await h.request("/healthz", { token: null })).status).toBe(200);
  });
});

describe("cancel", () => {
  it("cancels a pending work order: 200, state cancelled, event recorded; again is 409", async () => {
    const { id } = await enqueue();
    const response = await h.request(`/v1/work-orders/${id}/cancel`, { method: "POST", token: h.tokens.ci });
    expect(response.status).toBe(200);
    const view = (await response.json()) as WorkOrderView;
    expect(view).toMatchObject({ id, state: "cancelled" });

    const { state, events } = (await (await h.request(`/v1/work-orders/${id}`)).json()) as Detail;
    expect(state).toBe("cancelled");
    expect(events.map((e) => [e.from, e.to, e.reason])).toEqual([
      [null, "pending", null],
      ["pending", "cancelled", "cancelled by request"],
    ]);

    const again = await h.request(`/v1/work-orders/${id}/cancel`, { method: "POST", token: h.tokens.ci });
    const error = await expectError(again, 409, "conflict");
    expect(error.message).toContain("cancelled");
  });

  it("records the reason given in a JSON body", async () => {
    const { id } = await enqueue();
    const response = await h.request(`/v1/work-orders/${id}/cancel`, { token: h.tokens.ci, json: { reason: "superseded by #43" } });
    expect(response.status).toBe(200);
    const { events } = (await (await h.request(`/v1/work-orders/${id}`)).json()) as Detail;
    expect(events.at(-1)).toMatchObject({ from: "pending", to: "cancelled", reason: "superseded by #43" });
  });

  it("accepts an empty JSON object as the body", async () => {
    const { id } = await enqueue();
    const response = await h.request(`/v1/work-orders/${id}/cancel`, { token: h.tokens.ci, json: {} });
    expect(response.status).toBe(200);
  });

  it("refuses a bad cancel body and leaves the work order pending", async () => {
    const { id } = await enqueue();
    const path = `/v1/work-orders/${id}/cancel`;
    await expectError(await h.request(path, { json: { reason: "" } }), 400, "invalid_request", "reason");
    await expectError(await h.request(path, { json: { reason: 5 } }), 400, "invalid_request", "reason");
    await expectError(await h.request(path, { json: { why: "x" } }), 400, "invalid_request", "why");
    await expectError(
      await h.request(path, { body: "{", headers: { "content-type": "application/json" } }),
      400,
      "invalid_json",
    );
    await expectError(await h.request(path, { body: "reason", headers: { "content-type": "text/plain" } }), 415, "unsupported_media_type");
    const { state } = (await (await h.request(`/v1/work-orders/${id}`)).json()) as Detail;
    expect(state).toBe("pending");
  });

  it("cancelling an unknown work order is 404", async () => {
    await expectError(await h.request("/v1/work-orders/999999999/cancel", { method: "POST" }), 404, "not_found");
  });
});

describe("bulk enqueue", () => {
  const bulk = (workOrders: unknown[]) => h.request("/v1/work-orders/bulk", { method: "POST", token: h.tokens.ci, json: { workOrders } });

  it("enqueues every work order, answering their ids in the order given", async () => {
    const response = await bulk([
      execOrder({ priority: 1 }),
      execOrder({ idempotencyKey: "bulk-a", selector: "os=linux" }),
      execOrder({ idempotencyKey: "bulk-a", selector: "os=linux" }),
      execOrder({ priority: 3 }),
    ]);
    expect(response.status).toBe(201);
    const { ids, created } = (await response.json()) as { ids: string[]; created: number };
    expect(created).toBe(3);
    expect(ids[2]).toBe(ids[1]);
    expect(Number(ids[0])).toBeLessThan(Number(ids[1]));
    expect(Number(ids[1])).toBeLessThan(Number(ids[3]));
    const views = await Promise.all(ids.map(async (id) => (await (await h.request(`/v1/work-orders/${id}`)).json()) as WorkOrderView));
    expect(views.map((v) => [v.priority, v.selector, v.state])).toEqual([
      [1, "", "pending"],
      [0, "os=linux", "pending"],
      [0, "os=linux", "pending"],
      [3, "", "pending"],
    ]);
  });

  it("a key enqueued before resolves to the existing work order, and is not created again", async () => {
    const first = (await (await bulk([execOrder({ idempotencyKey: "bulk-b" })])).json()) as { ids: string[] };
    const again = (await (await bulk([execOrder(), execOrder({ idempotencyKey: "bulk-b" })])).json()) as { ids: string[]; created: number };
    expect(again.created).toBe(1);
    expect(again.ids[1]).toBe(first.ids[0]);
  });

  it("a key that names a work order asked for otherwise is 422 naming its place, and enqueues none of them", async () => {
    const [first] = ((await (await bulk([execOrder({ idempotencyKey: "bulk-c" })])).json()) as { ids: string[] }).ids;
    const count = async () => (await h.services.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders`))[0]!.n;
    const before = await count();
    const response = await bulk([execOrder(), execOrder({ idempotencyKey: "bulk-c" }), execOrder({ idempotencyKey: "bulk-c", labels: { team: "web" } })]);
    const error = await expectError(response, 422, "idempotency_key_reused", "workOrders.2.idempotencyKey");
    expect(error.message).toBe(`idempotency key "bulk-c" names work order ${first}, enqueued with a different labels`);
    expect(await count()).toBe(before);
  });

  it("names the field of a bad work order by its place, and enqueues none of them", async () => {
    const count = async () => (await h.services.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders`))[0]!.n;
    const before = await count();
    await expectError(await bulk([execOrder(), { spec: { script: "x", command: ["y"] } }]), 400, "invalid_request", "workOrders.1.spec.command");
    const late = Array.from({ length: 1_600 }, (_, i) => (i === 1_234 ? { spec: { command: ["true"] }, priority: 1.5 } : execOrder()));
    await expectError(await bulk(late), 400, "invalid_request", "workOrders.1234.priority");
    await expectError(await bulk([execOrder(), execOrder(), execOrder({ metadata: { x: "\udfff" } })]), 400, "invalid_request", "workOrders.2.metadata.x");
    await expectError(await bulk([]), 400, "invalid_request", "workOrders");
    await expectError(await bulk(Array.from({ length: 10_001 }, () => ({ spec: { command: ["true"] } }))), 400, "invalid_request", "workOrders");
    expect(await count()).toBe(before);
  });

  it("takes 10,000 work orders in one request, over the usual 1 MiB body limit", async () => {
    const response = await bulk(Array.from({ length: 10_000 }, (_, i) => ({ spec: { command: ["echo", String(i), "x".repeat(100)] } })));
    expect(response.status).toBe(201);
    expect(((await response.json()) as { created: number }).created).toBe(10_000);
  });
});
