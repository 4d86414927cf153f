// A job message the coordinator's database refuses (here a full disk, raised by a trigger on every
// finishing update of a job) is not lost: the coordinator says it was not applied, and the agent
// sends it again on a backoff, over the same connection, until the database takes it.
import { afterAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import type { Agent } from "../../agent/agent.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

const runs = new Map<string, (result: RunResult) => void>();
const gate: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async ({ workOrderId }) => ({
    result: new Promise<RunResult>((resolve) => runs.set(workOrderId, resolve)),
    cancel: async () => runs.get(workOrderId)!({ outcome: "cancelled", exitCode: null }),
  }),
};

const fleet = useInProcessCoordinator();
const agents: Agent[] = [];

afterAll(async () => {
  for (const run of runs.values()) run({ outcome: "succeeded", exitCode: 0 });
  await Promise.all(agents.map((a) => a.stop(1000)));
});

const api = <T>(method: string, path: string, body?: unknown) => fleet().api<T>(method, path, body);
const query = <T>(sql: string) => fleet().coordinator.db.query<T>(sql);
const stateOf = async (id: string) => (await api<WorkOrderView>("GET", `/v1/work-orders/${id}`)).state;
/** Refusals so far: a sequence, which the refusing transaction's rollback does not undo. */
const refusals = async () => (await query<{ n: string }>(`SELECT (CASE WHEN is_called THEN last_value ELSE 0 END)::text AS n FROM refusals`))[0]!.n;
const sessionOf = async (name: string) => (await query<{ s: string }>(`SELECT session_id AS s FROM agents WHERE name = '${name}'`))[0]!.s;

test("a finish the database refuses is sent again over the same connection until it is taken, and the job ends once", async () => {
  await query(`CREATE SEQUENCE refusals`);
  await query(`CREATE TABLE refusing (on_now boolean NOT NULL)`);
  await query(`INSERT INTO refusing VALUES (true)`);
  await query(`CREATE FUNCTION refuse_finish() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL AND (SELECT on_now FROM refusing) THEN
        PERFORM nextval('refusals');
        RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
      END IF;
      RETURN NEW;
    END $$`);
  await query(`CREATE TRIGGER refuse_finish BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_finish()`);

  agents.push(fleet().agent({ name: "full-disk", labels: { pool: "refused" }, adapter: gate }));
  const order = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["gate"] }, selector: "pool=refused" });
  await vi.waitFor(async () => expect(await stateOf(order.id)).toBe("running"));
  const session = await sessionOf("full-disk");

  runs.get(order.id)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(Number(await refusals())).toBeGreaterThan(0));
  // A batch refused whole is tried again message by message: what that adds is in before counting on.
  await new Promise((resolve) => setTimeout(resolve, 200));
  const first = Number(await refusals());
  // Sent again while still refused: the agent was told, and keeps trying.
  await vi.waitFor(async () => expect(Number(await refusals())).toBeGreaterThan(first), { timeout: 10_000 });
  expect(await stateOf(order.id)).toBe("running");

  await query(`UPDATE refusing SET on_now = false`);
  await vi.waitFor(async () => expect(await stateOf(order.id)).toBe("succeeded"), { timeout: 20_000 });
  expect(await sessionOf("full-disk")).toBe(session);
  const view = await api<WorkOrderView & { events: { from: string | null; to: string }[] }>("GET", `/v1/work-orders/${order.id}`);
  expect(view.attempts).toBe(1);
  expect(view.events.map((e) => `${e.from}->${e.to}`)).toEqual(["null->pending", "pending->claimed", "claimed->running", "running->succeeded"]);
}, 40_000);
