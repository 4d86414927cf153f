// A run timeout that fires while the adapter is still starting, whose start then returns within the
// grace: the agent stops that run within what is left of the grace, and the reaper, the agent's
// backstop, must not end the job and retry it before then. Both once went wrong together: the
// agent gave the late run a fresh grace while the reaper counted from job.starting, and the retry
// ran beside the first attempt still being stopped.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, expect, test } from "vitest";
import type { Adapter } from "../../adapters/adapter.ts";
import { execAdapter } from "../../adapters/exec.ts";
import { Agent } from "../../agent/agent.ts";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import type { WorkOrderView } from "../../protocol/api.ts";

const logger = pino({ level: "silent" });
let coordinator: Coordinator;
let ci: string;
const agents: Agent[] = [];
const dir = mkdtempSync(join(tmpdir(), "timeout-overlap-"));
const overlaps = join(dir, "overlaps");

// Attempt 1's start returns 4.5 s after it was asked, past its 1 s timeout but within the 5 s grace.
const slowFirstStart: Adapter<unknown> = {
  name: "exec",
  spec: execAdapter.spec as Adapter<unknown>["spec"],
  async start(ctx) {
    if (ctx.attempt === 1) await new Promise((resolve) => setTimeout(resolve, 4_500));
    return execAdapter.start(ctx as never);
  },
};

beforeAll(async () => {
  writeFileSync(overlaps, "");
  // lease − heartbeat = 5 s: the agent's timeout grace is its whole 5 s cancel grace.
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, heartbeatSeconds: 1, leaseSeconds: 6, logger });
  ci = (await tokenCreate(coordinator.db, "ci", "ci")).token;
  const token = (await tokenCreate(coordinator.db, "agents", "agent")).token;
  for (const name of ["a", "b"]) {
    const agent = new Agent({ urls: [coordinator.agentUrl], token, name, labels: { pool: "overlap" }, capacity: 1, mode: "queue", version: "test", cancelGraceMs: 5_000, logger, adapters: () => slowFirstStart });
    agent.start();
    agents.push(agent);
  }
});

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.stop(500)));
  await coordinator?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const api = async <T>(method: string, path: string, body?: unknown) =>
  (await (
    await fetch(`${coordinator.url}${path}`, { method, headers: { authorization: `Bearer ${ci}`, "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) })
  ).json()) as T;

test("a timed-out job whose start returned within the grace is not retried while its run is still being stopped", async () => {
  // Each attempt holds a lock for as long as any of its processes lives (SIGTERM is ignored, so until SIGKILL).
  const script = `exec 9>>'${join(dir, "lock")}'; if ! flock -n 9; then echo "attempt $JOBFLEET_ATTEMPT overlapped" >> '${overlaps}'; exit 3; fi; trap '' TERM; sleep 30`;
  const { id } = await api<WorkOrderView>("POST", "/v1/work-orders", {
    spec: { script },
    selector: "pool=overlap",
    timeoutSeconds: 1,
    retryOn: ["timed_out"],
    maxAttempts: 2,
    retryBackoffSeconds: 0,
  });
  await expect.poll(async () => (await api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).attempts, { timeout: 20_000 }).toBe(2);
  // Attempt 1 is killed about 10.5 s after it began; give attempt 2 time to run into it, or not.
  await new Promise((resolve) => setTimeout(resolve, 4_000));
  const order = await api<WorkOrderView>("GET", `/v1/work-orders/${id}`);
  expect(readFileSync(overlaps, "utf8"), JSON.stringify(order)).toBe("");
}, 40_000);
