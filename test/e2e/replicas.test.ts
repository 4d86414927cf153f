// Two coordinator processes over one Postgres serve one fleet: wake-ups, cancels and log follows
// cross between them, and either one can die.
import { afterAll, beforeAll, expect, test } from "vitest";
import { describePostgres } from "../support/databases.ts";
import { type Fleet, sh, startFleet } from "../support/fleet.ts";

describePostgres("two coordinator replicas, sharing one Postgres server", () => {
  let fleet: Fleet;

  beforeAll(async () => {
    fleet = await startFleet("postgres", { replicas: 2, heartbeatSeconds: 1, leaseSeconds: 10 });
    await fleet.startAgent("on-zero", ["--labels", "side=zero"], [0]);
    await fleet.startAgent("on-one", ["--labels", "side=one"], [1, 0]);
  }, 60_000);

  afterAll(async () => fleet?.stop());

  test("a work order enqueued on one replica wakes the agent connected to the other, at once", async () => {
    const order = await fleet.ciAt(0).enqueue({ ...sh("echo crossed"), selector: "side=one" });
    const ended = await fleet.ciAt(0).follow(order.id);
    expect(ended).toMatchObject({ state: "succeeded", log: "crossed\n" });
    expect((await fleet.ciAt(1).get(order.id)).latestJob?.agent).toBe("on-one");
  });

  test("a log followed on one replica streams live from a job whose agent is on the other", async () => {
    const order = await fleet.ciAt(1).enqueue({ ...sh("for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done; sleep 6; echo done"), selector: "side=zero" });
    // Live: the first line arrives while the job still runs. A follower that only looked every 15 s,
    // as one does when changes are not relayed, would see it after the job ended.
    await fleet.ciAt(1).follow(order.id, /tick 1/);
    expect((await fleet.ciAt(1).get(order.id)).state).toBe("running");
    const ended = await fleet.ciAt(1).follow(order.id);
    expect(ended.log).toBe("tick 1\ntick 2\ntick 3\ntick 4\ntick 5\ndone\n");
  });

  test("a cancel sent to one replica reaches the agent on the other", async () => {
    const order = await fleet.ciAt(0).enqueue({ ...sh("echo started; sleep 600"), selector: "side=one" });
    await fleet.ciAt(0).follow(order.id, /started/);
    expect((await fleet.ciAt(0).call("POST", `/v1/work-orders/${order.id}/cancel`)).status).toBe(202);
    expect((await fleet.ciAt(0).follow(order.id)).state).toBe("cancelled");
  });

  test("when a replica dies, its agent moves to the other and its running job goes on", async () => {
    const order = await fleet.ciAt(0).enqueue({ ...sh("for i in $(seq 1 30); do echo n $i; sleep 0.1; done"), selector: "side=one" });
    await fleet.ciAt(0).follow(order.id, /n 3\n/);
    await fleet.coordinators[1]!.stop("SIGKILL");
    const ended = await fleet.ciAt(0).follow(order.id);
    expect(ended.state).toBe("succeeded");
    expect(ended.log).toBe(Array.from({ length: 30 }, (_, i) => `n ${i + 1}\n`).join(""));
    const again = await fleet.ciAt(0).enqueue({ ...sh("echo still here"), selector: "side=one" });
    expect(await fleet.ciAt(0).follow(again.id)).toMatchObject({ state: "succeeded", log: "still here\n" });
  });

  test("a replica stopped with SIGTERM exits cleanly, and its agent moves to the other", async () => {
    await fleet.restartCoordinator(1);
    await fleet.startAgent("late", ["--labels", "side=two"], [1, 0]);
    const exit = await fleet.coordinators[1]!.stop("SIGTERM");
    expect(exit.code).toBe(0);
    expect(exit.stderr).toMatch(/"msg":"shutting down"/);
    const order = await fleet.ciAt(0).enqueue({ ...sh("echo moved"), selector: "side=two" });
    expect(await fleet.ciAt(0).follow(order.id)).toMatchObject({ state: "succeeded", log: "moved\n" });
    expect((await fleet.ciAt(0).get(order.id)).latestJob?.agent).toBe("late");
  });
});
