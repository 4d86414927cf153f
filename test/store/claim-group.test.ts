// The group claim: one statement for several agents that share labels and mode. Work addressed to
// a member goes to that member, the rest is dealt over free slots, nobody gets more than it asked
// for, and concurrent group claims never hand out the same work order twice.
import { beforeEach, describe, expect, it } from "vitest";
import { workOrderGet } from "../../coordinator/sql/work-order-read.ts";
import { type GroupAssignment, type Member, workOrdersClaim } from "../../coordinator/sql/work-order-claim.ts";
import { describePostgres, forEachDatabase } from "../support/databases.ts";
import { cancelAllPending, connectAgent, order, seededRandom, useDatabase, workOrderInsert } from "./fixtures.ts";

const LINUX = { labels: { os: "linux" }, queueMode: true };

function byAgent(claimed: GroupAssignment[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const a of claimed) out.set(a.agentId, [...(out.get(a.agentId) ?? []), a.workOrderId]);
  return out;
}

forEachDatabase("workOrdersClaim", (kind) => {
  const db = useDatabase(kind, 10);

  beforeEach(async () => {
    await cancelAllPending(db());
  });

  async function members(prefix: string, wants: number[]): Promise<Member[]> {
    const out: Member[] = [];
    for (const [i, want] of wants.entries()) {
      const agent = await connectAgent(db(), `${prefix}-${i}`, LINUX.labels);
      out.push({ agentId: agent.agentId, name: agent.name, want });
    }
    return out;
  }

  async function insert(n: number, body: Record<string, unknown> = {}): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push((await workOrderInsert(db(), order({ selector: "os=linux", ...body }))).row.id);
    return ids;
  }

  it("deals queue work over the members' slots in turn, oldest first, never past a member's want", async () => {
    const [a, b, c] = await members("deal", [3, 1, 2]);
    const ids = await insert(8);
    const claimed = await workOrdersClaim(db(), LINUX, [a!, b!, c!]);
    expect(claimed.map((x) => x.workOrderId)).toEqual(ids.slice(0, 6));
    const got = byAgent(claimed);
    // Slot order: each member's first slot, then each one's second, and so on.
    expect(got.get(a!.agentId)).toEqual([ids[0], ids[3], ids[5]]);
    expect(got.get(b!.agentId)).toEqual([ids[1]]);
    expect(got.get(c!.agentId)).toEqual([ids[2], ids[4]]);
    for (const id of ids.slice(6)) expect((await workOrderGet(db(), id))?.state).toBe("pending");
  });

  it("gives work addressed to a member to that member, counted in its want", async () => {
    const [a, b] = await members("addr", [2, 2]);
    const queued = await insert(3);
    const [toB] = await insert(1, { agent: b!.name, selector: "gpu" });
    const claimed = await workOrdersClaim(db(), LINUX, [a!, b!]);
    const got = byAgent(claimed);
    expect(got.get(b!.agentId)).toContain(toB);
    expect(got.get(b!.agentId)).toHaveLength(2);
    expect(got.get(a!.agentId)).toHaveLength(2);
    expect(new Set(claimed.map((x) => x.workOrderId))).toEqual(new Set([...queued, toB]));
    const [job] = await db().query<{ agent_id: string }>(`SELECT agent_id::text AS agent_id FROM jobs WHERE work_order_id = $1`, [toB]);
    expect(job!.agent_id).toBe(b!.agentId);
  });

  it("leaves addressed work past its member's want pending, for that member's next claim", async () => {
    const [a, b] = await members("over", [1, 1]);
    const mine = await insert(3, { agent: a!.name, priority: 5 });
    const claimed = await workOrdersClaim(db(), LINUX, [a!, b!]);
    expect(claimed.map((x) => [x.agentId, x.workOrderId])).toEqual([[a!.agentId, mine[0]]]);
    for (const id of mine.slice(1)) expect((await workOrderGet(db(), id))?.state).toBe("pending");
    // b's slot is still open and nothing else it may run is waiting: the next claim is empty for it.
    const again = await workOrdersClaim(db(), LINUX, [b!]);
    expect(again).toEqual([]);
  });

  it("work addressed to one member past its want leaves the others' slots to queue work", async () => {
    const [a, b] = await members("crowd", [1, 1]);
    const [first] = await insert(2, { agent: a!.name, priority: 10 });
    const [queued] = await insert(1);
    const claimed = await workOrdersClaim(db(), LINUX, [a!, b!]);
    expect(byAgent(claimed)).toEqual(new Map([[a!.agentId, [first]], [b!.agentId, [queued]]]));
  });

  it("gives work addressed to an agent that is a member twice (a reconnect in flight) to one of its sessions", async () => {
    const [a] = await members("twice", [1]);
    const [toA] = await insert(1, { agent: a!.name });
    const claimed = await workOrdersClaim(db(), LINUX, [a!, a!]);
    expect(claimed.map((c) => [c.workOrderId, c.agentId])).toEqual([[toA, a!.agentId]]);
  });

  it("in work-order mode takes only what is addressed to the members", async () => {
    const direct = { labels: LINUX.labels, queueMode: false };
    const [a, b] = await members("direct", [5, 5]);
    await insert(3);
    const [toA] = await insert(1, { agent: a!.name });
    const claimed = await workOrdersClaim(db(), direct, [a!, b!]);
    expect(claimed.map((x) => [x.agentId, x.workOrderId])).toEqual([[a!.agentId, toA]]);
  });

  it("concurrent group claims hand every work order out exactly once, within each want", { timeout: 120_000 }, async () => {
    const TOTAL = 1500;
    const pool = await members("conc", [0, 0, 0, 0, 0, 0]);
    const rnd = seededRandom(77);
    const ids: string[] = [];
    for (let i = 0; i < TOTAL; i++) {
      const target = rnd() < 0.2 ? pool[Math.floor(rnd() * pool.length)]!.name : undefined;
      ids.push((await workOrderInsert(db(), order({ selector: "os=linux", agent: target, priority: Math.floor(rnd() * 3) }))).row.id);
    }
    const owner = new Map<string, string>();
    let duplicates = 0;
    let overWant = 0;
    const loop = async (seed: number): Promise<void> => {
      const pick = seededRandom(seed);
      for (let round = 0; round < 10_000; round++) {
        const group = pool.filter(() => pick() < 0.5).map((m) => ({ ...m, want: 1 + Math.floor(pick() * 8) }));
        if (group.length === 0) continue;
        const claimed = await workOrdersClaim(db(), LINUX, group);
        for (const [agentId, got] of byAgent(claimed)) if (got.length > group.find((m) => m.agentId === agentId)!.want) overWant++;
        for (const a of claimed) {
          if (owner.has(a.workOrderId)) duplicates++;
          owner.set(a.workOrderId, a.agentId);
        }
        if (owner.size === TOTAL) return;
        if (claimed.length === 0 && group.length === pool.length) {
          const [left] = await db().query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders WHERE state = 'pending'`);
          if (left!.n === 0) return;
        }
      }
      throw new Error("gave up with work orders still pending");
    };
    await Promise.all([1, 2, 3, 4, 5, 6].map(loop));
    expect(duplicates).toBe(0);
    expect(overWant).toBe(0);
    expect(new Set(owner.keys())).toEqual(new Set(ids));
    const jobs = await db().query<{ work_order_id: string; agent_id: string; target: string | null; name: string }>(
      `SELECT j.work_order_id::text AS work_order_id, j.agent_id::text AS agent_id, wo.target_agent AS target, a.name
       FROM jobs j JOIN work_orders wo ON wo.id = j.work_order_id JOIN agents a ON a.id = j.agent_id
       WHERE j.work_order_id = ANY($1::bigint[])`,
      [ids],
    );
    expect(jobs).toHaveLength(TOTAL);
    for (const job of jobs) {
      expect(job.agent_id).toBe(owner.get(job.work_order_id));
      if (job.target !== null) expect(job.name).toBe(job.target);
    }
  });
});

describePostgres("workOrdersClaim beside a claim waiting for its commit [postgres]", () => {
  const db = useDatabase("postgres", 4);

  it("locks no queue work it does not deal: what a member's addressed work left untaken goes to the other claim", async () => {
    const a = await connectAgent(db(), "waiting-a", LINUX.labels);
    const b = await connectAgent(db(), "waiting-b", LINUX.labels);
    const toA = (await workOrderInsert(db(), order({ selector: "os=linux", agent: a.name }))).row.id;
    const queued = (await workOrderInsert(db(), order({ selector: "os=linux" }))).row.id;
    let other: GroupAssignment[] = [];
    await db().transaction(async (tx) => {
      const held = await workOrdersClaim(tx, LINUX, [{ agentId: a.agentId, name: a.name, want: 1 }]);
      expect(held.map((x) => x.workOrderId)).toEqual([toA]);
      // Before the first commits, as a round in flight would be.
      other = await workOrdersClaim(db(), LINUX, [{ agentId: b.agentId, name: b.name, want: 1 }]);
    });
    expect(other.map((x) => x.workOrderId)).toEqual([queued]);
  });
});

describe("workOrdersClaim without members", () => {
  it("asks nothing of the database when no slot is open", async () => {
    const refuse = { query: () => Promise.reject(new Error("no query expected")) };
    expect(await workOrdersClaim(refuse, LINUX, [])).toEqual([]);
  });
});
