// The claim hands the next attempt the external run its predecessor lost hold of, and only then.
import { expect, it } from "vitest";
import { workOrderClaim } from "../../coordinator/sql/work-order-claim.ts";
import { forEachDatabase } from "../support/databases.ts";
import { cancelAllPending, connectAgent, jobApply, order, useDatabase, workOrderInsert } from "./fixtures.ts";

forEachDatabase("adoption of external runs", (kind) => {
  const db = useDatabase(kind);

  async function secondAttempt(first: { external: boolean; outcome: "lost" | "failed"; infrastructure: boolean; retryOn?: string[] }) {
    const agent = await connectAgent(db(), `adopter-${first.outcome}-${first.infrastructure}-${first.external}`, { pool: "adopt" });
    await cancelAllPending(db());
    await workOrderInsert(db(), order({ selector: "pool=adopt", maxAttempts: 2, retryBackoffSeconds: 0, retryOn: first.retryOn }));
    const [job] = await workOrderClaim(db(), agent, 1);
    expect(job!.adopt).toBeNull();
    const ref = first.external ? { externalId: "run-77", externalUrl: "https://ci.example/runs/77" } : {};
    await jobApply(db(), agent.agentId, { type: "job.started", jobId: job!.jobId, seq: 1, ...ref });
    await jobApply(db(), agent.agentId, {
      type: "job.finished",
      jobId: job!.jobId,
      seq: 2,
      outcome: first.outcome,
      exitCode: null,
      infrastructure: first.infrastructure,
    });
    const [next] = await workOrderClaim(db(), agent, 1);
    expect(next).toMatchObject({ workOrderId: job!.workOrderId, attempt: 2 });
    return next!;
  }

  it("adopts the run of a lost attempt", async () => {
    const next = await secondAttempt({ external: true, outcome: "lost", infrastructure: false });
    expect(next.adopt).toEqual({ externalId: "run-77", externalUrl: "https://ci.example/runs/77" });
  });

  it("adopts the run of an attempt handed back (an infrastructure failure)", async () => {
    const next = await secondAttempt({ external: true, outcome: "failed", infrastructure: true });
    expect(next.adopt).toEqual({ externalId: "run-77", externalUrl: "https://ci.example/runs/77" });
  });

  it("starts afresh after the job's own failure, or when there was no external run", async () => {
    expect((await secondAttempt({ external: true, outcome: "failed", infrastructure: false, retryOn: ["failed"] })).adopt).toBeNull();
    expect((await secondAttempt({ external: false, outcome: "lost", infrastructure: false })).adopt).toBeNull();
  });
});
