// Edges of the read side a review found: a page that holds the last items says there is no more,
// whatever its size; an agent whose coordinator died without writing its disconnect is not listed
// as connected once its lease has lapsed; and reads that take no query parameter refuse one by name.
import { describe, expect, it } from "vitest";
import { agentConnect } from "../../coordinator/sql/agent-session.ts";
import type { AgentView, WorkOrderView } from "../../protocol/api.ts";
import { execOrder, expectError, useHarness } from "./harness.ts";

const h = useHarness();

type Page<T> = { items: T[]; next: string | null };

async function get<T>(path: string): Promise<Page<T>> {
  const response = await h.request(path, { token: h.tokens.ci });
  expect(response.status).toBe(200);
  return (await response.json()) as Page<T>;
}

const connect = (name: string, pool: string) => agentConnect(h.services.db, { name, labels: { pool }, capacity: 1, mode: "queue", version: "t" }, `session-${name}`);

describe("the last page says there is no more", () => {
  it("work orders: two of them, limit=2", async () => {
    for (let i = 0; i < 2; i++) expect((await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder({ labels: { suite: "exact" } }) })).status).toBe(201);
    const page = await get<WorkOrderView>("/v1/work-orders?labels=suite%3Dexact&limit=2");
    expect(page.items).toHaveLength(2);
    expect(page.next).toBeNull();
    const shorter = await get<WorkOrderView>("/v1/work-orders?labels=suite%3Dexact&limit=1");
    expect(shorter.next).toBe(shorter.items[0]!.id);
  });

  it("agents: two of them, limit=2", async () => {
    for (let i = 0; i < 2; i++) await connect(`exact-${i}`, "exact");
    const page = await get<AgentView>("/v1/agents?labels=pool%3Dexact&limit=2");
    expect(page.items.map((a) => a.name)).toEqual(["exact-0", "exact-1"]);
    expect(page.next).toBeNull();
  });

  it("jobs: none at all, and a limit of one over none", async () => {
    expect(await get("/v1/jobs?agent=nobody-at-all&limit=1")).toEqual({ items: [], next: null });
  });
});

it("an agent whose lease lapsed, its coordinator killed before it wrote the disconnect, is not listed as connected", async () => {
  const id = (await connect("orphan-1", "orphan"))!.id;
  await h.services.db.query(`UPDATE agents SET lease_expires_at = now() - interval '1 hour', last_seen_at = now() - interval '1 hour' WHERE id = $1`, [id]);
  expect((await get<AgentView>("/v1/agents?labels=pool%3Dorphan")).items.map((a) => [a.name, a.connected])).toEqual([["orphan-1", false]]);
  expect((await get<AgentView>("/v1/agents?labels=pool%3Dorphan&connected=false")).items.map((a) => a.name)).toEqual(["orphan-1"]);
  expect((await get<AgentView>("/v1/agents?labels=pool%3Dorphan&connected=true")).items).toEqual([]);
});

describe("routes that take no query parameter refuse one, naming it", () => {
  it("GET /v1/tokens, whose parameters are its page's", async () => {
    await expectError(await h.request("/v1/tokens?bogus=1"), 400, "invalid_request", "bogus");
  });

  it("the POSTs and DELETEs, before they change anything", async () => {
    const count = async () => (await h.services.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders`))[0]!.n;
    const before = await count();
    await expectError(await h.request("/v1/work-orders?bogus=1", { token: h.tokens.ci, json: execOrder() }), 400, "invalid_request", "bogus");
    await expectError(await h.request("/v1/work-orders/bulk?bogus=1", { token: h.tokens.ci, json: { workOrders: [execOrder()] } }), 400, "invalid_request", "bogus");
    expect(await count()).toBe(before);
    const created = (await (await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder() })).json()) as WorkOrderView;
    await expectError(await h.request(`/v1/work-orders/${created.id}/cancel?bogus=1`, { token: h.tokens.ci, method: "POST" }), 400, "invalid_request", "bogus");
    expect(((await (await h.request(`/v1/work-orders/${created.id}`, { token: h.tokens.ci })).json()) as WorkOrderView).state).toBe("pending");
    await expectError(await h.request("/v1/tokens?bogus=1", { json: { name: "x", role: "ci" } }), 400, "invalid_request", "bogus");
    const token = (await (await h.request("/v1/tokens", { json: { name: "kept", role: "ci" } })).json()) as { id: string };
    await expectError(await h.request(`/v1/tokens/${token.id}?bogus=1`, { method: "DELETE" }), 400, "invalid_request", "bogus");
    expect((await h.request(`/v1/tokens/${token.id}`, { method: "DELETE" })).status).toBe(204);
  });

  it("GET /v1/work-orders/:id", async () => {
    const created = (await (await h.request("/v1/work-orders", { token: h.tokens.ci, json: execOrder() })).json()) as WorkOrderView;
    await expectError(await h.request(`/v1/work-orders/${created.id}?bogus=1`, { token: h.tokens.ci }), 400, "invalid_request", "bogus");
  });

  it("GET /v1/jobs/:id, before it looks for the job", async () => {
    await expectError(await h.request(`/v1/jobs/999999?bogus=1`, { token: h.tokens.ci }), 400, "invalid_request", "bogus");
  });
});
