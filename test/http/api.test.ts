// The HTTP API's door: bearer tokens, roles, the token routes, health and the agent list.
import { describe, expect, it } from "vitest";
import type { AgentView, TokenView } from "../../protocol/api.ts";
import { tokenCreate, TokenVerifier } from "../../coordinator/auth/tokens.ts";
import { createApp } from "../../coordinator/http/app.ts";
import { agentConnect, agentDisconnect } from "../../coordinator/sql/agent-session.ts";
import { execOrder, expectError, send, useHarness } from "./harness.ts";

const h = useHarness();

/** The secret part of `jft_<id>_<secret>` (which may itself hold `_`). */
const secretOf = (token: string) => token.replace(/^jft_\d+_/, "");

/** Asserts a 401 whose body does not echo what was presented. */
async function expectUnauthenticated(response: Response, presented?: string): Promise<void> {
  const text = await response.clone().text();
  await expectError(response, 401, "unauthenticated");
  if (presented) expect(text).not.toContain(presented);
}

describe("authentication", () => {
  it("refuses a request without an Authorization header", async () => {
    await expectUnauthenticated(await h.request("/v1/work-orders", { token: null }));
  });

  it("refuses a non-bearer Authorization header", async () => {
    const response = await h.request("/v1/work-orders", { token: null, headers: { authorization: `Basic ${h.tokens.admin}` } });
    await expectUnauthenticated(response, h.tokens.admin);
  });

  it("takes the scheme name in any case, as HTTP says", async () => {
    const response = await h.request("/v1/work-orders", { token: null, headers: { authorization: `bearer ${h.tokens.ci}` } });
    expect(response.status).toBe(200);
  });

  it("accepts a token made after its id was tried (misses are not cached)", async () => {
    const verifier = new TokenVerifier(h.services.db);
    const [, last] = /^jft_(\d+)_/.exec((await tokenCreate(h.services.db, "probe", "ci")).token)!;
    const next = String(Number(last) + 1);
    expect(await verifier.verify(`jft_${next}_${"a".repeat(43)}`)).toBeUndefined();
    const { token } = await tokenCreate(h.services.db, "fresh", "ci");
    expect(token.startsWith(`jft_${next}_`)).toBe(true);
    expect(await verifier.verify(token)).toMatchObject({ name: "fresh", role: "ci" });
  });

  it("refuses an empty bearer token", async () => {
    await expectUnauthenticated(await h.request("/v1/work-orders", { token: null, headers: { authorization: "Bearer " } }));
  });

  it.each([
    ["garbage", "not-a-token"],
    ["a wrong prefix", "xyz_1_" + "a".repeat(43)],
    ["a non-numeric id", "jft_abc_" + "a".repeat(43)],
    ["a short secret", "jft_1_abc"],
    ["a secret with bad characters", "jft_1_" + "!".repeat(43)],
    ["an id above the largest bigint", "jft_9999999999999999999_" + "a".repeat(43)],
  ])("refuses a malformed token: %s", async (_, token) => {
    await expectUnauthenticated(await h.request("/v1/work-orders", { token }), token);
  });

  it("refuses a well-formed token with the wrong secret", async () => {
    const [, id] = /^jft_(\d+)_/.exec(h.tokens.admin)!;
    const forged = `jft_${id}_${"A".repeat(43)}`;
    expect(forged).not.toBe(h.tokens.admin);
    await expectUnauthenticated(await h.request("/v1/tokens", { token: forged }), forged);
  });

  it("refuses a well-formed token whose id does not exist", async () => {
    const token = `jft_987654321_${"B".repeat(43)}`;
    await expectUnauthenticated(await h.request("/v1/work-orders", { token }), token);
  });

  it("refuses a revoked token (verifier without a cache)", async () => {
    const uncached = createApp({ ...h.services, verifier: new TokenVerifier(h.services.db, { ttlMs: 0 }) }, (e) => h.unexpected.push(e));
    const { token, view } = await tokenCreate(h.services.db, "soon-revoked", "ci");
    expect((await send(uncached, token, "/v1/work-orders")).status).toBe(200);

    const revoked = await send(uncached, h.tokens.admin, `/v1/tokens/${view.id}`, { method: "DELETE" });
    expect(revoked.status).toBe(204);

    await expectUnauthenticated(await send(uncached, token, "/v1/work-orders"), token);
    // The admin token is untouched.
    expect((await send(uncached, h.tokens.admin, "/v1/work-orders")).status).toBe(200);
  });

  it("guards every /v1 route, even unknown ones", async () => {
    await expectUnauthenticated(await h.request("/v1/no-such-thing", { token: null }));
  });
});

describe("roles", () => {
  const routes = [
    ["GET", "/v1/work-orders"],
    ["GET", "/v1/jobs"],
    ["GET", "/v1/agents"],
    ["GET", "/v1/tokens"],
  ] as const;

  it("an agent token may not use the work order API", async () => {
    const list = await h.request("/v1/work-orders", { token: h.tokens.agent });
    const text = await list.clone().text();
    await expectError(list, 403, "forbidden");
    expect(text).not.toContain(h.tokens.agent);

    const enqueue = await h.request("/v1/work-orders", { token: h.tokens.agent, json: execOrder() });
    await expectError(enqueue, 403, "forbidden");
    await expectError(await h.request("/v1/work-orders/1/cancel", { token: h.tokens.agent, method: "POST" }), 403, "forbidden");
  });

  it("an agent token may use none of the HTTP API", async () => {
    for (const [method, path] of routes) {
      await expectError(await h.request(path, { method, token: h.tokens.agent }), 403, "forbidden");
    }
  });

  it("a ci token may not manage tokens", async () => {
    const list = await h.request("/v1/tokens", { token: h.tokens.ci });
    const text = await list.clone().text();
    await expectError(list, 403, "forbidden");
    expect(text).not.toContain(h.tokens.ci);
    await expectError(await h.request("/v1/tokens", { token: h.tokens.ci, json: { name: "x", role: "admin" } }), 403, "forbidden");
    await expectError(await h.request("/v1/tokens/1", { token: h.tokens.ci, method: "DELETE" }), 403, "forbidden");
  });

  it("a ci token may use work orders, jobs and agents", async () => {
    for (const [method, path] of routes.filter(([, p]) => p !== "/v1/tokens")) {
      expect((await h.request(path, { method, token: h.tokens.ci })).status).toBe(200);
    }
    expect((await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder() })).status).toBe(201);
  });

  it("an admin token may do everything", async () => {
    for (const [method, path] of routes) {
      expect((await h.request(path, { method, token: h.tokens.admin })).status).toBe(200);
    }
    const created = await h.request("/v1/work-orders", { token: h.tokens.admin, json: execOrder() });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const cancelled = await h.request(`/v1/work-orders/${id}/cancel`, { token: h.tokens.admin, method: "POST" });
    expect(cancelled.status).toBe(200);
    const token = await h.request("/v1/tokens", { token: h.tokens.admin, json: { name: "by-admin", role: "ci" } });
    expect(token.status).toBe(201);
  });
});

describe("tokens", () => {
  it("creates a token that works for its role", async () => {
    const response = await h.request("/v1/tokens", { json: { name: "ci-pipeline", role: "ci" } });
    expect(response.status).toBe(201);
    const created = (await response.json()) as TokenView & { token: string };
    expect(created).toMatchObject({ name: "ci-pipeline", role: "ci" });
    expect(created.id).toMatch(/^[1-9][0-9]*$/);
    expect(created.token).toMatch(new RegExp(`^jft_${created.id}_[A-Za-z0-9_-]{43}$`));
    expect(new Date(created.createdAt).toISOString()).toBe(created.createdAt);

    expect((await h.request("/v1/work-orders", { token: created.token })).status).toBe(200);
    await expectError(await h.request("/v1/tokens", { token: created.token }), 403, "forbidden");
  });

  it("lists tokens without any secret or hash", async () => {
    const { token } = (await (await h.request("/v1/tokens", { json: { name: "listed", role: "agent" } })).json()) as {
      token: string;
    };
    const response = await h.request("/v1/tokens");
    expect(response.status).toBe(200);
    const text = await response.text();
    const { items } = JSON.parse(text) as { items: TokenView[] };
    expect(items.map((t) => t.name)).toEqual(expect.arrayContaining(["test-admin", "test-ci", "test-agent", "listed"]));
    for (const item of items) expect(Object.keys(item).sort()).toEqual(["createdAt", "id", "name", "role"]);
    expect(text).not.toMatch(/hash|secret|"token"/i);
    expect(text).not.toContain(secretOf(token));
    expect(text).not.toContain(secretOf(h.tokens.admin));
  });

  it("lists live tokens a page at a time, oldest first, each page's next reading on", async () => {
    for (const name of ["paged-1", "paged-2", "paged-3"]) await h.request("/v1/tokens", { json: { name, role: "ci" } });
    const revoked = (await (await h.request("/v1/tokens", { json: { name: "paged-revoked", role: "ci" } })).json()) as TokenView;
    await h.request(`/v1/tokens/${revoked.id}`, { method: "DELETE" });
    const all = ((await (await h.request("/v1/tokens?limit=500")).json()) as { items: TokenView[]; next: string | null });
    expect(all.next).toBeNull();
    const seen: TokenView[] = [];
    for (let after: string | null = "", pages = 0; after !== null; pages++) {
      expect(pages).toBeLessThan(all.items.length);
      const response = await h.request(`/v1/tokens?limit=2${after ? `&after=${after}` : ""}`);
      const { items, next } = (await response.json()) as { items: TokenView[]; next: string | null };
      expect(items.length).toBeLessThanOrEqual(2);
      seen.push(...items);
      after = next;
    }
    expect(seen).toEqual(all.items);
    expect(seen.map((t) => Number(t.id))).toEqual(seen.map((t) => Number(t.id)).sort((x, y) => x - y));
    expect(seen.map((t) => t.name)).toEqual(expect.arrayContaining(["paged-1", "paged-2", "paged-3"]));
    expect(seen.map((t) => t.id)).not.toContain(revoked.id);
    await expectError(await h.request("/v1/tokens?after=x"), 400, "invalid_request", "after");
    await expectError(await h.request("/v1/tokens?limit=501"), 400, "invalid_request", "limit");
  });

  it("revokes a token: 204, then it is gone from the list; again or unknown is 404", async () => {
    const created = (await (await h.request("/v1/tokens", { json: { name: "to-revoke", role: "ci" } })).json()) as TokenView;
    const response = await h.request(`/v1/tokens/${created.id}`, { method: "DELETE" });
    expect(response.status).toBe(204);
    expect(await response.text()).toBe("");

    const { items } = (await (await h.request("/v1/tokens")).json()) as { items: TokenView[] };
    expect(items.map((t) => t.id)).not.toContain(created.id);

    await expectError(await h.request(`/v1/tokens/${created.id}`, { method: "DELETE" }), 404, "not_found");
    await expectError(await h.request("/v1/tokens/99999999", { method: "DELETE" }), 404, "not_found");
    await expectError(await h.request("/v1/tokens/abc", { method: "DELETE" }), 400, "invalid_request", "id");
  });

  it.each([
    [{ name: "x", role: "root" }, "role"],
    [{ role: "ci" }, "name"],
    [{ name: "", role: "ci" }, "name"],
    [{ name: "x", role: "ci", scopes: [] }, "scopes"],
  ])("refuses a bad token body %j (field %s)", async (json, field) => {
    await expectError(await h.request("/v1/tokens", { json }), 400, "invalid_request", field);
  });
});

describe("health and agents", () => {
  it("GET /healthz needs no token", async () => {
    const response = await h.request("/healthz", { token: null });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ ok: true });
  });

  it("GET /v1/agents lists registered agents for a ci token", async () => {
    const agentId = (await agentConnect(
      h.services.db,
      { name: "builder-7", labels: { os: "linux", arch: "arm64" }, capacity: 3, prefetch: 2, mode: "queue", version: "1.2.3" },
      "session-7",
    ))!.id;
    const response = await h.request("/v1/agents", { token: h.tokens.ci });
    expect(response.status).toBe(200);
    const { items } = (await response.json()) as { items: AgentView[] };
    const agent = items.find((a) => a.name === "builder-7");
    expect(agent).toEqual({
      id: agentId,
      name: "builder-7",
      labels: { os: "linux", arch: "arm64" },
      capacity: 3,
      prefetch: 2,
      mode: "queue",
      version: "1.2.3",
      connected: true,
      lastSeenAt: expect.any(String),
    });
    expect(new Date(agent!.lastSeenAt).toISOString()).toBe(agent!.lastSeenAt);
  });
});

describe("GET /v1/agents, a page at a time", () => {
  const page = async (query: string) => {
    const response = await h.request(`/v1/agents${query}`, { token: h.tokens.ci });
    expect(response.status).toBe(200);
    return (await response.json()) as { items: AgentView[]; next: string | null };
  };
  const names = (p: { items: AgentView[] }) => p.items.map((a) => a.name);

  it("in name order, `limit` at a time, each page's `next` the `after` of the one after; filtered by connection and labels", async () => {
    for (const [i, arch] of ["amd64", "arm64", "amd64", "arm64", "amd64"].entries()) {
      const id = (await agentConnect(h.services.db, { name: `paged-${i}`, labels: { pool: "paged", arch }, capacity: 1, mode: "queue", version: "t" }, `s-paged-${i}`))!.id;
      if (i === 4) await agentDisconnect(h.services.db, id, `s-paged-${i}`, 30);
    }
    const first = await page("?labels=pool%3Dpaged&limit=2");
    expect(names(first)).toEqual(["paged-0", "paged-1"]);
    expect(first.next).toBe("paged-1");
    const second = await page(`?labels=pool%3Dpaged&limit=2&after=${first.next}`);
    expect(names(second)).toEqual(["paged-2", "paged-3"]);
    const last = await page(`?labels=pool%3Dpaged&limit=2&after=${second.next}`);
    expect(last).toEqual({ items: [expect.objectContaining({ name: "paged-4", connected: false })], next: null });
    expect(names(await page("?labels=pool%3Dpaged,arch%3Damd64&connected=true"))).toEqual(["paged-0", "paged-2"]);
    expect(names(await page("?labels=pool%3Dpaged&connected=false"))).toEqual(["paged-4"]);
  });

  it.each([
    ["?connected=maybe", "connected"],
    ["?limit=501", "limit"],
    ["?after=%20x", "after"],
    ["?labels=os%3D%3D%3D", "labels"],
    ["?bogus=1", "bogus"],
    // Unknown like any other, though a plain object would have taken it for its prototype.
    ["?__proto__=1", "__proto__"],
  ])("a bad query (%s) is 400 naming the field", async (query, field) => {
    await expectError(await h.request(`/v1/agents${query}`), 400, "invalid_request", field);
  });
});

describe("routing", () => {
  it("an unknown route is a JSON 404", async () => {
    await expectError(await h.request("/nope", { token: null }), 404, "not_found");
    await expectError(await h.request("/v1/nope"), 404, "not_found");
    await expectError(await h.request("/v1/work-orders", { method: "PUT", json: {} }), 404, "not_found");
  });
});
