// Faults with real processes: an agent killed mid-job, a coordinator killed and restarted.
import { afterAll, beforeAll, expect, test } from "vitest";
import { forEachDatabase } from "../support/databases.ts";
import { type Ended, type Fleet, sh, startFleet } from "../support/fleet.ts";

/** A work order whose first attempt runs until stopped and whose second succeeds at once. */
function retriedOnce(fleet: Fleet, pool: string) {
  return fleet.ci.enqueue({
    ...sh('echo "attempt $JOBFLEET_ATTEMPT"; [ "$JOBFLEET_ATTEMPT" = 2 ] || sleep 600'),
    selector: `pool=${pool}`,
    maxAttempts: 2,
    retryBackoffSeconds: 0,
  });
}

/** It succeeded on attempt 2. The follow shows whichever attempt is latest when it starts, then every later one. */
function expectRetried(ended: Ended): void {
  expect(ended.state).toBe("succeeded");
  expect(ended.log).toMatch(/^(attempt 1\n)?attempt 2\n$/);
}

/** A fleet for the describe block it is called in. */
function useFleet(kind: Parameters<typeof startFleet>[0], options: Parameters<typeof startFleet>[1]): () => Fleet {
  let fleet: Fleet | undefined;
  beforeAll(async () => void (fleet = await startFleet(kind, options)), 60_000);
  afterAll(async () => fleet?.stop());
  return () => fleet!;
}

forEachDatabase("a lost agent", (kind) => {
  const current = useFleet(kind, { heartbeatSeconds: 1, leaseSeconds: 3 });

  test("the job of an agent that dies is lost after the lease and retried on another agent", async () => {
    const fleet = current();
    const doomed = await fleet.startAgent("doomed", ["--labels", "pool=lossy"]);
    const order = await retriedOnce(fleet, "lossy");
    await fleet.ci.follow(order.id, /attempt 1/);
    await doomed.stop("SIGKILL");
    await fleet.startAgent("rescuer", ["--labels", "pool=lossy"]);
    expectRetried(await fleet.ci.follow(order.id));
    const view = await fleet.ci.get(order.id);
    expect(view).toMatchObject({ attempts: 2, latestJob: { agent: "rescuer", attempt: 2 } });
    const jobs = (await fleet.ci.call<{ items: { attempt: number; state: string; agent: string }[] }>("GET", `/v1/jobs?workOrder=${order.id}`)).body.items;
    expect(jobs.map((j) => [j.attempt, j.state, j.agent])).toEqual([
      [2, "succeeded", "rescuer"],
      [1, "lost", "doomed"],
    ]);
  });
});

forEachDatabase("a draining agent", (kind) => {
  const current = useFleet(kind, { heartbeatSeconds: 1, leaseSeconds: 10 });

  test("whose drain times out hands its job back, and another agent runs it", async () => {
    const fleet = current();
    const leaving = await fleet.startAgent("leaving", ["--labels", "pool=handback", "--drain-timeout", "1"]);
    const order = await retriedOnce(fleet, "handback");
    await fleet.ci.follow(order.id, /attempt 1/);
    expect((await leaving.stop("SIGTERM")).code).toBe(0);
    await fleet.startAgent("arriving", ["--labels", "pool=handback"]);
    expectRetried(await fleet.ci.follow(order.id));
    const jobs = (await fleet.ci.call<{ items: { attempt: number; state: string; infrastructure: boolean }[] }>("GET", `/v1/jobs?workOrder=${order.id}`)).body.items;
    expect(jobs.map((j) => [j.attempt, j.state, j.infrastructure])).toEqual([
      [2, "succeeded", false],
      [1, "failed", true],
    ]);
  });
});

forEachDatabase("a coordinator restart", (kind) => {
  // The lease outlasts a restart (PGlite takes a few seconds to open), so the agent keeps its job.
  const current = useFleet(kind, { heartbeatSeconds: 1, leaseSeconds: 20 });

  test("a coordinator killed and restarted loses nothing: the running job goes on and its log is whole", async () => {
    const fleet = current();
    await fleet.startAgent("steady", ["--labels", "pool=steady"]);
    const order = await fleet.ci.enqueue({
      ...sh("i=0; while [ $i -lt 40 ]; do i=$((i+1)); echo \"line $i\"; sleep 0.1; done"),
      selector: "pool=steady",
    });
    await fleet.ci.follow(order.id, /line 5\n/);
    await fleet.restartCoordinator();
    const ended = await fleet.ci.follow(order.id);
    expect(ended.state).toBe("succeeded");
    expect(ended.log).toBe(Array.from({ length: 40 }, (_, i) => `line ${i + 1}\n`).join(""));
    expect((await fleet.ci.get(order.id)).attempts).toBe(1);
  });
});
