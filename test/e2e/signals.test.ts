// README (Agents): a second SIGTERM or Ctrl-C hands the jobs back at once, and a third exits on the
// spot. The signals may be of either kind in any order: a third of the other kind than the second
// once ran the hand-back again, and the agent stayed until its job's cancel grace ran out.
import { afterAll, beforeAll, expect, test } from "vitest";
import { describePostgres } from "../support/databases.ts";
import { type Fleet, sh, startFleet } from "../support/fleet.ts";

describePostgres("an agent signalled three times", () => {
  let fleet: Fleet;
  beforeAll(async () => void (fleet = await startFleet("postgres", { heartbeatSeconds: 1, leaseSeconds: 10 })), 60_000);
  afterAll(async () => fleet?.stop());

  test("SIGTERM, SIGTERM, then SIGINT: the third signal exits on the spot", { timeout: 60_000 }, async () => {
    const agent = await fleet.startAgent("thrice", ["--labels", "pool=thrice", "--cancel-grace", "30"]);
    // A job that ignores SIGTERM (the sleep inherits the ignored signal), so a hand-back waits its grace.
    const order = await fleet.ci.enqueue({ ...sh("trap '' TERM; echo ready; exec sleep 1000"), selector: "pool=thrice" });
    await fleet.ci.follow(order.id, /ready/);
    agent.child.kill("SIGTERM"); // drain
    await agent.waitForLog("draining");
    agent.child.kill("SIGTERM"); // hand back at once
    await agent.waitForLog("drain timed out; handing back the jobs left");
    const third = Date.now();
    agent.child.kill("SIGINT"); // exit on the spot
    await agent.exited;
    expect(Date.now() - third).toBeLessThan(5_000);
  });
});
