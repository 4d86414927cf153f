// The claim statement: exclusive under concurrency, ordered, and in exact agreement with the
// TypeScript selector matcher about which work orders an agent may run.
import fc from "fast-check";
import { beforeEach, describe, expect, it } from "vitest";
import { workOrderGet } from "../../coordinator/sql/work-order-read.ts";
import { type Claimant, workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import type { Assignment } from "../../protocol/messages.ts";
import { formatSelector, matchesSelector, parseSelector, type Selector } from "../../protocol/selector.ts";
import { arbLabels, arbSelector, referenceMatches } from "../protocol/selector-cases.ts";
import { forEachDatabase } from "../support/databases.ts";
import { cancelAllPending, connectAgent, eventsOf, order, seededRandom, useDatabase, workOrderInsert } from "./fixtures.ts";

/** Whether `agent` may run a work order with this selector and target, as the claim must decide. */
function eligible(agent: Claimant, selector: Selector, target: string | null): boolean {
  if (target !== null) return target === agent.name;
  return agent.queueMode && matchesSelector(selector, agent.labels);
}

forEachDatabase("workOrderClaim", (kind) => {
  const db = useDatabase(kind, 12);

  beforeEach(async () => {
    await cancelAllPending(db());
  });

  describe("exclusivity under concurrency", () => {
    const TOTAL = 3000;
    const CLAIMERS = 24;
    const SEED = 20_240_601;

    it("claims every work order exactly once across 24 concurrent claimers", { timeout: 120_000 }, async () => {
      const rnd = seededRandom(SEED);
      const agents = [
        await connectAgent(db(), "conc-0", { os: "linux" }),
        await connectAgent(db(), "conc-1", { os: "linux", arch: "arm64" }),
        await connectAgent(db(), "conc-2", { arch: "arm64", gpu: "" }),
        await connectAgent(db(), "conc-3", {}),
        await connectAgent(db(), "conc-4", { os: "darwin", gpu: "x" }),
        await connectAgent(db(), "conc-5", { os: "linux", gpu: "" }),
        await connectAgent(db(), "conc-6", { arch: "amd64" }),
        await connectAgent(db(), "conc-7", { os: "linux", arch: "arm64" }, "work-order"),
      ];
      // Every selector here is matched by at least one queue-mode agent, so the queue can drain.
      const selectorPool = ["", "os=linux", "arch=arm64", "!gpu", "gpu", "os in (darwin,linux),!arch"].map(parseSelector);
      for (const selector of selectorPool) {
        expect(agents.some((a) => eligible(a, selector, null))).toBe(true);
      }

      const planned = Array.from({ length: TOTAL }, () => {
        const selector = selectorPool[Math.floor(rnd() * selectorPool.length)]!;
        const target = rnd() < 0.1 ? agents[Math.floor(rnd() * agents.length)]!.name : null;
        return { selector, target, priority: Math.floor(rnd() * 5) - 2 };
      });
      // One multi-row insert, with the same `pending` creation event workOrderInsert records.
      const inserted = await db().query<{ id: string; priority: number; selector: Selector; target: string | null }>(
        `WITH wo AS (
           INSERT INTO work_orders (adapter, spec, selector, selector_text, target_agent, labels, priority, metadata)
           SELECT 'exec', '{"command":["true"],"env":{}}'::jsonb, s::jsonb, st, NULLIF(t, ''), '{}'::jsonb, p, '{}'::jsonb
           FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) AS u(p, s, st, t)
           RETURNING id, state, priority, selector, target_agent
         ), event AS (
           INSERT INTO work_order_events (work_order_id, to_state) SELECT id, state FROM wo
         )
         SELECT id::text AS id, priority, selector, target_agent AS target FROM wo ORDER BY id`,
        [
          planned.map((p) => p.priority),
          planned.map((p) => JSON.stringify(p.selector)),
          planned.map((p) => formatSelector(p.selector)),
          planned.map((p) => p.target ?? ""),
        ],
      );
      expect(inserted).toHaveLength(TOTAL);
      const byId = new Map(inserted.map((row) => [row.id, row]));

      type Claimed = { agent: Claimant; limit: number; got: Assignment[] };
      const results: Claimed[] = [];
      let inFlight = 0;
      let maxInFlight = 0;
      const claimer = async (index: number): Promise<void> => {
        const pick = seededRandom(SEED + 1 + index);
        for (let round = 0; round < 20_000; round++) {
          const agent = agents[Math.floor(pick() * agents.length)]!;
          const limit = 1 + Math.floor(pick() * 20);
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          const got = await workOrderClaim(db(), agent, limit).finally(() => inFlight--);
          results.push({ agent, limit, got });
          if (got.length === 0) {
            const [left] = await db().query<{ n: number }>(
              `SELECT count(*)::int AS n FROM work_orders WHERE state = 'pending'`,
            );
            if (left!.n === 0) return;
          }
        }
        throw new Error(`claimer ${index} gave up with work orders still pending`);
      };
      await Promise.all(Array.from({ length: CLAIMERS }, (_, i) => claimer(i)));
      expect(maxInFlight).toBeGreaterThan(1);

      // Each claim: within its limit, in priority-then-age order, only work the agent may run.
      const claimedBy = new Map<string, { agent: Claimant; jobId: string }>();
      const jobIds = new Set<string>();
      let duplicates = 0;
      for (const { agent, limit, got } of results) {
        expect(got.length).toBeLessThanOrEqual(limit);
        const keys = got.map((a) => [byId.get(a.workOrderId)!.priority, BigInt(a.workOrderId)] as const);
        for (let i = 1; i < keys.length; i++) {
          const [p0, id0] = keys[i - 1]!;
          const [p1, id1] = keys[i]!;
          expect(p0 > p1 || (p0 === p1 && id0 < id1)).toBe(true);
        }
        for (const a of got) {
          const row = byId.get(a.workOrderId);
          expect(row).toBeDefined();
          expect(eligible(agent, row!.selector, row!.target)).toBe(true);
          expect(a.attempt).toBe(1);
          expect(a.adapter).toBe("exec");
          if (claimedBy.has(a.workOrderId)) duplicates++;
          claimedBy.set(a.workOrderId, { agent, jobId: a.jobId });
          jobIds.add(a.jobId);
        }
      }
      expect(duplicates).toBe(0);
      expect(claimedBy.size).toBe(TOTAL);
      expect(jobIds.size).toBe(TOTAL);
      expect(new Set(claimedBy.keys())).toEqual(new Set(byId.keys()));

      // The tables agree: one first-attempt job per work order, on the agent that claimed it.
      const jobs = await db().query<{ id: string; work_order_id: string; attempt: number; agent_id: string; state: string }>(
        `SELECT id::text AS id, work_order_id::text AS work_order_id, attempt, agent_id::text AS agent_id, state::text AS state
         FROM jobs WHERE work_order_id = ANY($1::bigint[])`,
        [[...byId.keys()]],
      );
      expect(jobs).toHaveLength(TOTAL);
      for (const job of jobs) {
        const claim = claimedBy.get(job.work_order_id)!;
        expect(job).toEqual({
          id: claim.jobId,
          work_order_id: job.work_order_id,
          attempt: 1,
          agent_id: claim.agent.agentId,
          state: "claimed",
        });
      }
      const orders = await db().query<{ id: string; state: string; attempts: number; latest_job_id: string }>(
        `SELECT id::text AS id, state::text AS state, attempts, latest_job_id::text AS latest_job_id
         FROM work_orders WHERE id = ANY($1::bigint[])`,
        [[...byId.keys()]],
      );
      expect(orders).toHaveLength(TOTAL);
      for (const wo of orders) {
        expect(wo).toEqual({ id: wo.id, state: "claimed", attempts: 1, latest_job_id: claimedBy.get(wo.id)!.jobId });
      }
      for (const [id, claim] of claimedBy) {
        expect(await eventsOf(db(), id)).toEqual([
          { job_id: null, from_state: null, to_state: "pending", reason: null },
          { job_id: claim.jobId, from_state: "pending", to_state: "claimed", reason: null },
        ]);
      }
    });
  });

  describe("ordering", () => {
    it("takes higher priority first, then the oldest, and never more than the limit", { timeout: 30_000 }, async () => {
      const agent = await connectAgent(db(), "order-agent", { os: "linux" });
      const priorities = [0, 5, -1, 5, 0, 10, -1, 3, 0, 10];
      const ids: string[] = [];
      for (const priority of priorities) {
        ids.push((await workOrderInsert(db(), order({ priority, selector: "os=linux" }))).row.id);
      }
      const expected = ids
        .map((id, i) => ({ id, priority: priorities[i]! }))
        .sort((a, b) => b.priority - a.priority || Number(BigInt(a.id) - BigInt(b.id)))
        .map((o) => o.id);
      // Sanity: ids grow with insertion order, so "oldest" is the smallest id.
      expect([...ids].sort((a, b) => Number(BigInt(a) - BigInt(b)))).toEqual(ids);

      const first = await workOrderClaim(db(), agent, 3);
      expect(first.map((a) => a.workOrderId)).toEqual(expected.slice(0, 3));
      const second = await workOrderClaim(db(), agent, 4);
      expect(second.map((a) => a.workOrderId)).toEqual(expected.slice(3, 7));
      const rest = await workOrderClaim(db(), agent, 100);
      expect(rest.map((a) => a.workOrderId)).toEqual(expected.slice(7));
      expect(await workOrderClaim(db(), agent, 100)).toEqual([]);

      const jobIds = [...first, ...second, ...rest].map((a) => a.jobId);
      expect(new Set(jobIds).size).toBe(priorities.length);
      for (const a of [...first, ...second, ...rest]) {
        expect(a).toEqual({
          jobId: a.jobId,
          workOrderId: a.workOrderId,
          attempt: 1,
          priority: priorities[ids.indexOf(a.workOrderId)],
          adapter: "exec",
          spec: { command: ["true"], env: {} },
          timeoutSeconds: null,
          adopt: null,
        });
      }
    });

    it("carries the work order's timeout into the assignment", async () => {
      const agent = await connectAgent(db(), "timeout-agent");
      const { row } = await workOrderInsert(db(), order({ agent: "timeout-agent", timeoutSeconds: 90 }));
      const [assignment] = await workOrderClaim(db(), { ...agent, queueMode: false }, 5);
      expect(assignment).toMatchObject({ workOrderId: row.id, timeoutSeconds: 90, attempt: 1 });
    });
  });

  describe("selector agreement", () => {
    it("claims exactly the work orders whose selector matches the agent's labels", { timeout: 60_000 }, async () => {
      let runs = 0;
      let matchedTotal = 0;
      let unmatchedTotal = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(arbSelector, { minLength: 1, maxLength: 8 }),
          arbLabels,
          async (selectors, labels) => {
            runs++;
            const agent = await connectAgent(db(), "selector-agent", labels);
            const ids: string[] = [];
            for (const selector of selectors) {
              const create = order({ selector: formatSelector(selector) });
              expect(create.selector).toEqual(selector);
              ids.push((await workOrderInsert(db(), create)).row.id);
            }
            const expected = new Set(ids.filter((_, i) => matchesSelector(selectors[i]!, labels)));
            const reference = new Set(ids.filter((_, i) => referenceMatches(selectors[i]!, labels)));
            expect(expected).toEqual(reference);

            const claimed = await workOrderClaim(db(), agent, 1000);
            expect(new Set(claimed.map((a) => a.workOrderId))).toEqual(expected);
            expect(claimed).toHaveLength(expected.size);
            matchedTotal += expected.size;
            unmatchedTotal += ids.length - expected.size;

            // What did not match is still pending; cancel it so the next run starts empty.
            for (const id of ids.filter((id) => !expected.has(id))) {
              expect((await workOrderGet(db(), id))?.state).toBe("pending");
            }
            await cancelAllPending(db());
          },
        ),
        { numRuns: 40, seed: 424_242 },
      );
      expect(runs).toBe(40);
      // The generated cases exercise both outcomes, not only one.
      expect(matchedTotal).toBeGreaterThan(10);
      expect(unmatchedTotal).toBeGreaterThan(10);
    });

    it("an empty selector matches any agent, even one without labels", async () => {
      const bare = await connectAgent(db(), "bare-agent", {});
      const labelled = await connectAgent(db(), "labelled-agent", { os: "linux", gpu: "", "example.com/zone": "x" });
      const a = (await workOrderInsert(db(), order({ selector: "" }))).row;
      const b = (await workOrderInsert(db(), order({}))).row;
      expect(a.selector).toEqual([]);
      expect(b.selector_text).toBe("");
      const got1 = await workOrderClaim(db(), bare, 1);
      const got2 = await workOrderClaim(db(), labelled, 1);
      expect([...got1, ...got2].map((x) => x.workOrderId)).toEqual([a.id, b.id]);
    });

    it("a work order no agent matches stays pending, with only its creation event", async () => {
      const linux = await connectAgent(db(), "linux-agent", { os: "linux", arch: "amd64" });
      const { row } = await workOrderInsert(db(), order({ selector: "os=linux,gpu" }));
      expect(await workOrderClaim(db(), linux, 10)).toEqual([]);
      const after = await workOrderGet(db(), row.id);
      expect(after).toMatchObject({ state: "pending", attempts: 0, latest_job: null });
      expect(await eventsOf(db(), row.id)).toEqual([{ from_state: null, to_state: "pending", job_id: null, reason: null }]);
      const [jobs] = await db().query<{ n: number }>(`SELECT count(*)::int AS n FROM jobs WHERE work_order_id = $1`, [
        row.id,
      ]);
      expect(jobs!.n).toBe(0);
    });
  });

  describe("work-order mode", () => {
    it("a targeted work order goes only to the named agent, whatever its labels", async () => {
      const a1 = await connectAgent(db(), "a1", {});
      const other = await connectAgent(db(), "a1-lookalike", { os: "linux" });
      const otherDirect = await connectAgent(db(), "a2", { os: "linux" }, "work-order");
      const { row } = await workOrderInsert(db(), order({ agent: "a1", selector: "os=linux" }));
      expect(row.target_agent).toBe("a1");

      expect(await workOrderClaim(db(), other, 10)).toEqual([]);
      expect(await workOrderClaim(db(), otherDirect, 10)).toEqual([]);
      expect((await workOrderGet(db(), row.id))?.state).toBe("pending");

      const got = await workOrderClaim(db(), a1, 10);
      expect(got.map((a) => a.workOrderId)).toEqual([row.id]);
      const [job] = await db().query<{ agent_id: string }>(`SELECT agent_id::text AS agent_id FROM jobs WHERE id = $1`, [
        got[0]!.jobId,
      ]);
      expect(job!.agent_id).toBe(a1.agentId);
    });

    it("an agent in work-order mode takes only work addressed to it, never queue work", async () => {
      const direct = await connectAgent(db(), "direct-agent", { os: "linux" }, "work-order");
      expect(direct.queueMode).toBe(false);
      const queued = (await workOrderInsert(db(), order({ selector: "os=linux" }))).row;
      const open = (await workOrderInsert(db(), order({}))).row;
      const mine = (await workOrderInsert(db(), order({ agent: "direct-agent", selector: "gpu" }))).row;

      const got = await workOrderClaim(db(), direct, 10);
      expect(got.map((a) => a.workOrderId)).toEqual([mine.id]);
      expect(await workOrderClaim(db(), direct, 10)).toEqual([]);
      expect((await workOrderGet(db(), queued.id))?.state).toBe("pending");
      expect((await workOrderGet(db(), open.id))?.state).toBe("pending");
    });

    it("a queue-mode agent takes both queue work and work addressed to it", async () => {
      const agent = await connectAgent(db(), "both-agent", { os: "linux" });
      const queued = (await workOrderInsert(db(), order({ selector: "os=linux" }))).row;
      const mine = (await workOrderInsert(db(), order({ agent: "both-agent", selector: "!os", priority: 1 }))).row;
      const notMine = (await workOrderInsert(db(), order({ agent: "someone-else", priority: 2 }))).row;
      const mismatch = (await workOrderInsert(db(), order({ selector: "os=darwin" }))).row;

      const got = await workOrderClaim(db(), agent, 10);
      expect(got.map((a) => a.workOrderId)).toEqual([mine.id, queued.id]);
      expect((await workOrderGet(db(), notMine.id))?.state).toBe("pending");
      expect((await workOrderGet(db(), mismatch.id))?.state).toBe("pending");
    });
  });
});
