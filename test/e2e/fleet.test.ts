// The whole product as users run it: a coordinator and agents as separate processes on loopback,
// work enqueued over HTTP and with the CLI, on the embedded database and on Postgres.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { forEachDatabase } from "../support/databases.ts";
import { type Fleet, sh, startFleet } from "../support/fleet.ts";
import { jobfleet } from "../support/processes.ts";

forEachDatabase("a fleet of real processes", (kind) => {
  let fleet: Fleet;

  beforeAll(async () => {
    fleet = await startFleet(kind);
    await Promise.all([
      fleet.startAgent("amd", ["--labels", "os=linux,arch=amd64", "--capacity", "3"]),
      fleet.startAgent("arm", ["--labels", "os=linux,arch=arm64,gpu", "--capacity", "2"]),
      fleet.startAgent("addressed", ["--labels", "os=linux,arch=amd64", "--mode", "work-order"]),
    ]);
  }, 60_000);

  afterAll(async () => fleet?.stop());

  test("jobfleet run follows the log live and exits with the job's exit code", async () => {
    const run = jobfleet(["run", "--selector", "os=linux,arch=amd64", "--", "sh", "-c", "echo hello; echo oops >&2; exit 3"], {
      JOBFLEET_URL: fleet.url,
      JOBFLEET_TOKEN: fleet.ci.token,
    });
    const exit = await run.exited;
    expect(exit.code).toBe(3);
    expect(exit.stdout).toBe("hello\noops\n");
    expect(exit.stderr).toMatch(/work order (\d+) failed \(exit 3\)/);
    const id = exit.stderr.match(/work order (\d+) enqueued/)![1]!;
    const order = await fleet.ci.get(id);
    expect(order.latestJob).toMatchObject({ agent: "amd", state: "failed", exitCode: 3 });
  });

  test("selectors route work orders to the agents whose labels match, and only to them", async () => {
    const orders = await Promise.all([
      ...Array.from({ length: 8 }, () => fleet.ci.enqueue({ ...sh("echo $JOBFLEET_WORK_ORDER_ID"), selector: "arch=arm64" })),
      ...Array.from({ length: 8 }, () => fleet.ci.enqueue({ ...sh("echo $JOBFLEET_WORK_ORDER_ID"), selector: "arch in (amd64),!gpu" })),
      ...Array.from({ length: 4 }, () => fleet.ci.enqueue({ ...sh("true"), selector: "" })),
    ]);
    const ended = await Promise.all(orders.map((o) => fleet.ci.follow(o.id)));
    const agents = await Promise.all(orders.map(async (o) => (await fleet.ci.get(o.id)).latestJob!.agent));
    expect(ended.every((e) => e.state === "succeeded")).toBe(true);
    expect(agents.slice(0, 8)).toEqual(Array(8).fill("arm"));
    expect(agents.slice(8, 16)).toEqual(Array(8).fill("amd"));
    expect(agents.slice(16).every((a) => a === "amd" || a === "arm")).toBe(true);
    expect(ended.slice(0, 16).map((e) => e.log)).toEqual(orders.slice(0, 16).map((o) => `${o.id}\n`));
  });

  test("a work order no agent matches stays pending until cancelled", async () => {
    const stuck = await fleet.ci.enqueue({ ...sh("true"), selector: "arch=riscv64" });
    const later = await fleet.ci.enqueue({ ...sh("true"), selector: "os=linux" });
    expect((await fleet.ci.follow(later.id)).state).toBe("succeeded");
    expect((await fleet.ci.get(stuck.id)).state).toBe("pending");
    const cancelled = await fleet.ci.call("POST", `/v1/work-orders/${stuck.id}/cancel`);
    expect(cancelled).toMatchObject({ status: 200, body: { state: "cancelled", latestJob: null } });
  });

  test("an agent in work-order mode runs only what is addressed to it", async () => {
    const addressed = await fleet.ci.enqueue({ ...sh("echo mine"), agent: "addressed" });
    const queued = await Promise.all(Array.from({ length: 6 }, () => fleet.ci.enqueue({ ...sh("true"), selector: "arch=amd64" })));
    expect(await fleet.ci.follow(addressed.id)).toMatchObject({ state: "succeeded", log: "mine\n" });
    expect((await fleet.ci.get(addressed.id)).latestJob!.agent).toBe("addressed");
    for (const order of queued) await fleet.ci.follow(order.id);
    const ranOn = await Promise.all(queued.map(async (o) => (await fleet.ci.get(o.id)).latestJob!.agent));
    expect(ranOn).toEqual(Array(6).fill("amd"));
  });

  test("a long log arrives whole and in order", async () => {
    const order = await fleet.ci.enqueue({ ...sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); echo \"line $i ünïcödé\"; done"), selector: "arch=amd64" });
    const ended = await fleet.ci.follow(order.id);
    const expected = Array.from({ length: 20000 }, (_, i) => `line ${i + 1} ünïcödé\n`).join("");
    expect(ended.state).toBe("succeeded");
    expect(ended.log === expected).toBe(true);
    const whole = await fleet.ci.call<string>("GET", `/v1/jobs/${ended.jobs[0]}/log`);
    expect(whole.body === expected).toBe(true);
  });

  test("cancel stops a running job on its agent and ends it cancelled", async () => {
    const order = await fleet.ci.enqueue({ ...sh("echo started; sleep 600"), selector: "arch=arm64" });
    await fleet.ci.follow(order.id, /started/);
    const { status } = await fleet.ci.call("POST", `/v1/work-orders/${order.id}/cancel`, { reason: "e2e" });
    expect(status).toBe(202);
    const ended = await fleet.ci.follow(order.id);
    expect(ended.state).toBe("cancelled");
    expect((await fleet.ci.call("POST", `/v1/work-orders/${order.id}/cancel`)).status).toBe(409);
  });

  test("a run timeout ends the job timed_out, and run exits 124", async () => {
    const run = jobfleet(["run", "--timeout", "1", "-s", "arch=amd64", "--", "sleep", "600"], {
      JOBFLEET_URL: fleet.url,
      JOBFLEET_TOKEN: fleet.ci.token,
    });
    const exit = await run.exited;
    expect(exit.code).toBe(124);
    expect(exit.stderr).toMatch(/timed_out/);
  });

  test("a job that could not start says why, and run exits 125", async () => {
    const exit = await jobfleet(["run", "-s", "arch=amd64", "--", "no-such-command-xyz"], { JOBFLEET_URL: fleet.url, JOBFLEET_TOKEN: fleet.ci.token }).exited;
    expect(exit.code).toBe(125);
    expect(exit.stderr).toMatch(/work order \d+ failed: command not found: no-such-command-xyz\n/);
  });

  test("retry and queue-timeout flags reach the work order", async () => {
    const exit = await jobfleet(
      ["enqueue", "--json", "-s", "arch=riscv64", "--max-attempts", "3", "--retry-on", "lost,failed", "--retry-backoff", "1m", "--queue-timeout", "5m", "--", "true"],
      { JOBFLEET_URL: fleet.url, JOBFLEET_TOKEN: fleet.ci.token },
    ).exited;
    expect(exit.code).toBe(0);
    const order = JSON.parse(exit.stdout);
    expect(order).toMatchObject({ maxAttempts: 3, retryOn: ["lost", "failed"], retryBackoffSeconds: 60, queueTimeoutSeconds: 300 });
    await fleet.ci.call("POST", `/v1/work-orders/${order.id}/cancel`);
  });

  test("a work order no agent claims within its queue timeout ends timed_out, and run exits 124", async () => {
    const exit = await jobfleet(["run", "--queue-timeout", "1", "-s", "arch=riscv64", "--", "true"], {
      JOBFLEET_URL: fleet.url,
      JOBFLEET_TOKEN: fleet.ci.token,
    }).exited;
    expect(exit.code).toBe(124);
    expect(exit.stderr).toMatch(/timed_out/);
  });

  test("interrupting jobfleet run cancels the work order and exits 130", async () => {
    const run = jobfleet(["run", "-s", "arch=amd64", "--", "sh", "-c", "echo started; sleep 600"], {
      JOBFLEET_URL: fleet.url,
      JOBFLEET_TOKEN: fleet.ci.token,
    });
    await new Promise<void>((resolve) => run.child.stdout!.once("data", () => resolve()));
    run.child.kill("SIGINT");
    const exit = await run.exited;
    expect(exit.code).toBe(130);
    const id = exit.stderr.match(/work order (\d+) enqueued/)![1]!;
    expect((await fleet.ci.get(id)).state).toBe("cancelled");
  });

  test("an agent with a bad token stops at once, saying why, with exit 1", async () => {
    const agent = jobfleet(["agent", "--url", fleet.url, "--token", fleet.ci.token, "--name", "impostor"]);
    const exit = await agent.exited;
    expect(exit.code).toBe(1);
    expect(exit.stderr).toMatch(/jobfleet: agent stopped: the coordinator refused the token/);
  });

  test("an agent given --token-file dials again with the token written there once its old one is revoked, and stops once the file has none", async () => {
    const dir = mkdtempSync(join(tmpdir(), "jobfleet-rotate-"));
    const file = join(dir, "token");
    const old = await fleet.admin.mintToken("rotating-old", "agent");
    writeFileSync(file, `${old}\n`, { mode: 0o600 });
    const agent = jobfleet(["agent", "--url", fleet.url, "--token-file", file, "--name", "rotating", "--labels", "pool=rotate"]);
    try {
      await agent.waitForLog("connected");
      const fresh = await fleet.admin.mintToken("rotating-new", "agent");
      writeFileSync(file, `${fresh}\n`);
      expect((await fleet.admin.call("DELETE", `/v1/tokens/${old.split("_")[1]}`)).status).toBe(204);
      await agent.waitForLog("token refused; dialling again with the new one");
      const order = await fleet.ci.enqueue({ ...sh("echo rotated"), selector: "pool=rotate" });
      expect(await fleet.ci.follow(order.id)).toMatchObject({ state: "succeeded", log: "rotated\n" });
      expect(agent.child.exitCode).toBeNull();
      // Revoked with no token left in the file: the one read last is all it has, and it is refused.
      rmSync(file);
      await fleet.admin.call("DELETE", `/v1/tokens/${fresh.split("_")[1]}`);
      const exit = await agent.exited;
      expect(exit.code).toBe(1);
      expect(exit.stderr).toMatch(/"msg":"--token-file \S+ cannot be read \(ENOENT\); dialling with the token read before"/);
      expect(exit.stderr).toMatch(/jobfleet: agent stopped: the coordinator refused the token/);
    } finally {
      await agent.stop("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a draining agent finishes its running job before it exits", async () => {
    const agent = await fleet.startAgent("drainer", ["--labels", "pool=drain"]);
    const order = await fleet.ci.enqueue({ ...sh("echo started; sleep 1; echo done"), selector: "pool=drain" });
    await fleet.ci.follow(order.id, /started/);
    const exit = await agent.stop("SIGTERM");
    expect(exit.code).toBe(0);
    expect(await fleet.ci.follow(order.id)).toMatchObject({ state: "succeeded", log: "started\ndone\n" });
  });
});
