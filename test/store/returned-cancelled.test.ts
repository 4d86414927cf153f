// A job returned before it began does not count as an attempt (README, States), also when its work
// order's cancel was asked for meanwhile: the order ends cancelled, its attempt given back.
import { expect, it } from "vitest";
import { reapLost } from "../../coordinator/sql/reap.ts";
import { workOrderCancel } from "../../coordinator/sql/work-order-cancel.ts";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { forEachDatabase } from "../support/databases.ts";
import { connectAgent, jobApply, order, useDatabase, workOrderInsert } from "./fixtures.ts";

forEachDatabase("returned, then cancelled", (kind) => {
  const db = useDatabase(kind);

  const row = async (id: string) =>
    (await db().query<{ state: string; attempts: number }>(`SELECT state::text, attempts FROM work_orders WHERE id = $1`, [id]))[0]!;
  const jobState = async (id: string) => (await db().query<{ state: string }>(`SELECT state::text FROM jobs WHERE id = $1`, [id]))[0]!.state;

  it("a held job returned by the reaper after a cancel was asked: the order is cancelled and counts no attempt", async () => {
    const agent = await connectAgent(db(), "held-1", { pool: "held-1" });
    const { row: wo } = await workOrderInsert(db(), order({ selector: "pool=held-1", maxAttempts: 3 }));
    const [job] = await workOrderClaim(db(), agent, 1);
    expect(await workOrderCancel(db(), wo.id, "not needed")).toMatchObject({ kind: "requested" });
    await db().query(`UPDATE agents SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [agent.agentId]);
    await reapLost(db());
    expect(await jobState(job!.jobId)).toBe("returned");
    expect(await row(wo.id)).toEqual({ state: "cancelled", attempts: 0 });
  });

  it("a held job the agent hands back (returned) after a cancel was asked: the same", async () => {
    const agent = await connectAgent(db(), "held-2", { pool: "held-2" });
    const { row: wo } = await workOrderInsert(db(), order({ selector: "pool=held-2" }));
    const [job] = await workOrderClaim(db(), agent, 1);
    await workOrderCancel(db(), wo.id, "not needed");
    await jobApply(db(), agent.agentId, { type: "job.finished", jobId: job!.jobId, seq: 1, outcome: "returned", exitCode: null });
    expect(await jobState(job!.jobId)).toBe("returned");
    expect(await row(wo.id)).toEqual({ state: "cancelled", attempts: 0 });
  });
});
