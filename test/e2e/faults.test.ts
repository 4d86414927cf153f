// Faults with real processes: an agent killed mid-job, a coordinator killed and restarted, a
// coordinator frozen with its sockets open.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { describePostgres, forEachDatabase } from "../support/databases.ts";
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

describePostgres("a coordinator that goes silent without closing its sockets, among replicas [postgres]", () => {
  // Two replicas; the agent knows only the first. SIGSTOP freezes it with every socket open, as a
  // dead host or a network split would: no close, no answer. Its leases stop being renewed, so the
  // other replica declares the job lost once the lease has passed, and retries it elsewhere.
  const current = useFleet("postgres", { heartbeatSeconds: 1, leaseSeconds: 3, replicas: 2 });

  // The second job ignores SIGTERM and the agent's cancel grace is far longer than the lease: the
  // grace is cut so that the job is gone before the lease can run out.
  test.each([
    ["stops on SIGTERM", "", []],
    ["ignores SIGTERM, cancel grace 60 s", "trap '' TERM; ", ["--cancel-grace", "60"]],
  ])("the agent stops its job before the lease runs out, so the retry never overlaps it (job %s)", { timeout: 60_000 }, async (_, trap, flags) => {
    const fleet = current();
    const dir = mkdtempSync(join(tmpdir(), "jobfleet-silent-"));
    try {
      const name = `stranded-${trap ? "stubborn" : "plain"}`;
      await fleet.startAgent(name, ["--labels", `pool=${name}`, ...flags], [0]);
      const order = await fleet.ciAt(1).enqueue({
        // Every 50 ms, each attempt appends the time to its own file; the retry finishes at once.
        ...sh(`${trap}[ "$JOBFLEET_ATTEMPT" = 2 ] && { date +%s%N >> ${dir}/2; exit 0; }; while :; do date +%s%N >> ${dir}/1; sleep 0.05; done`),
        selector: `pool=${name}`,
        maxAttempts: 2,
        retryBackoffSeconds: 0,
      });
      await waitForFile(join(dir, "1"));
      // Waiting on the other replica, so the retry starts the moment the lease allows it.
      await fleet.startAgent(`rescuer-${name}`, ["--labels", `pool=${name}`], [1]);
      process.kill(fleet.coordinators[0]!.child.pid!, "SIGSTOP");
      try {
        const ended = await fleet.ciAt(1).follow(order.id);
        expect(ended.state).toBe("succeeded");
      } finally {
        process.kill(fleet.coordinators[0]!.child.pid!, "SIGCONT");
      }
      // A first attempt still running would write again within 50 ms; give it ten times that.
      await new Promise((r) => setTimeout(r, 500));
      const last = (file: string) => readFileSync(join(dir, file), "utf8").trim().split("\n").map(BigInt);
      const firstEnded = last("1").at(-1)!;
      const secondStarted = last("2")[0]!;
      expect(secondStarted > firstEnded).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a job the silent replica's agent only held is returned, not lost: it runs elsewhere on its one attempt", { timeout: 60_000 }, async () => {
    const fleet = current();
    await fleet.startAgent("holder", ["--labels", "pool=held", "--prefetch", "1"], [0]);
    const running = await fleet.ciAt(1).enqueue({ ...sh("echo begun; sleep 600"), selector: "pool=held" });
    await fleet.ciAt(1).follow(running.id, /begun/);
    const held = await fleet.ciAt(1).enqueue({ ...sh("echo ran"), selector: "pool=held" });
    await expect.poll(async () => (await fleet.ciAt(1).get(held.id)).state).toBe("claimed");
    await fleet.startAgent("taker", ["--labels", "pool=held"], [1]);
    process.kill(fleet.coordinators[0]!.child.pid!, "SIGSTOP");
    try {
      expect(await fleet.ciAt(1).follow(held.id)).toMatchObject({ state: "succeeded", log: "ran\n" });
      expect(await fleet.ciAt(1).follow(running.id)).toMatchObject({ state: "failed" });
    } finally {
      process.kill(fleet.coordinators[0]!.child.pid!, "SIGCONT");
    }
    const { body } = await fleet.ciAt(1).call<{ items: { attempt: number; agent: string; state: string }[] }>("GET", `/v1/jobs?workOrder=${held.id}`);
    expect(body.items.map(({ attempt, agent, state }) => ({ attempt, agent, state }))).toEqual([
      { attempt: 1, agent: "taker", state: "succeeded" },
      { attempt: 1, agent: "holder", state: "returned" },
    ]);
    expect((await fleet.ciAt(1).get(running.id)).latestJob).toMatchObject({ agent: "holder", state: "lost" });
  });
});

async function waitForFile(path: string): Promise<void> {
  for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 50));
  expect(existsSync(path)).toBe(true);
}
