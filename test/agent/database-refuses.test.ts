// What the coordinator's database refuses (here a full disk, raised by triggers while the test
// says so) is not lost. A job message is answered `not_applied`, and the agent sends it again on a
// backoff, over the same connection, until the database takes it; a hello the database refuses
// closes the socket (1013), and the agent redials and says hello again.
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";

const runs = new Map<string, (result: RunResult) => void>();
/** Lines each chatty run printed. */
const printed = new Map<string, number>();
/** Runs until the test ends it; one whose command is `chatty` prints a numbered line every 10 ms meanwhile. */
const gate: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async ({ workOrderId, spec, log }) => {
    let line = 0;
    const printer = (spec as { command: string[] }).command[0] === "chatty" ? setInterval(() => (log(`line ${line++}\n`), printed.set(workOrderId, line)), 10) : undefined;
    const result = new Promise<RunResult>((resolve) => runs.set(workOrderId, resolve)).finally(() => clearInterval(printer));
    return { result, cancel: async () => runs.get(workOrderId)!({ outcome: "cancelled", exitCode: null }) };
  },
};

const fleet = useInProcessCoordinator();

afterAll(() => {
  for (const run of runs.values()) run({ outcome: "succeeded", exitCode: 0 });
});

const api = <T>(method: string, path: string, body?: unknown) => fleet().api<T>(method, path, body);
const query = <T>(sql: string) => fleet().coordinator.db.query<T>(sql);
const stateOf = (id: string) => fleet().stateOf(id);
/** Refusals so far: a sequence, which the refusing transaction's rollback does not undo. */
const refusals = async () => (await query<{ n: string }>(`SELECT (CASE WHEN is_called THEN last_value ELSE 0 END)::text AS n FROM refusals`))[0]!.n;
const sessionOf = async (name: string) => (await query<{ s: string }>(`SELECT session_id AS s FROM agents WHERE name = '${name}'`))[0]!.s;

/** Makes the database refuse, as a full disk would, each `event` on `table` that `when` holds for while `refusing` says so; counts each. */
async function refuse(name: string, event: string, table: string, when: string): Promise<void> {
  await query(`CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF ${when} AND (SELECT on_now FROM refusing) THEN
        PERFORM nextval('refusals');
        RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
      END IF;
      RETURN NEW;
    END $$`);
  await query(`CREATE TRIGGER ${name} BEFORE ${event} ON ${table} FOR EACH ROW EXECUTE FUNCTION ${name}()`);
}

beforeAll(async () => {
  await query(`CREATE SEQUENCE refusals`);
  await query(`CREATE TABLE refusing (on_now boolean NOT NULL)`);
  await query(`INSERT INTO refusing VALUES (false)`);
  await refuse("refuse_finish", "UPDATE", "jobs", "NEW.finished_at IS NOT NULL AND OLD.finished_at IS NULL");
  await refuse("refuse_hello", "INSERT OR UPDATE", "agents", "NEW.name = 'unregistered'");
});

test("a finish the database refuses is sent again over the same connection until it is taken, and the job ends once", async () => {
  await query(`UPDATE refusing SET on_now = true`);
  fleet().agent({ name: "full-disk", labels: { pool: "refused" }, adapter: gate });
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

test("while a job's output is refused, its new chunks do not each send everything again: the resends keep to the backoff, and no line is lost", async () => {
  fleet().agent({ name: "chatty", labels: { pool: "chatty" }, adapter: gate });
  const order = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["chatty"] }, selector: "pool=chatty" });
  await vi.waitFor(async () => expect(await stateOf(order.id)).toBe("running"));
  await refuse("refuse_log", "INSERT", "job_logs", "true");
  const before = Number(await refusals());
  await query(`UPDATE refusing SET on_now = true`);
  // Two seconds of a chunk every 50 ms, each after the refused one a gap: a resend for each would be some 40.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const refused = Number(await refusals()) - before;
  expect(refused).toBeGreaterThan(0);
  expect(refused).toBeLessThan(10);

  await query(`UPDATE refusing SET on_now = false`);
  runs.get(order.id)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await stateOf(order.id)).toBe("succeeded"), { timeout: 20_000 });
  const response = await fetch(`${fleet().coordinator.url}/v1/work-orders/${order.id}/log`, { headers: { authorization: `Bearer ${fleet().ciToken}` } });
  const lines = (await response.text()).trimEnd().split("\n");
  expect(lines.length).toBeGreaterThan(100);
  expect(lines.length).toBe(printed.get(order.id));
  expect(lines).toEqual(lines.map((_, i) => `line ${i}`));
}, 40_000);

test("a hello the database refuses closes the socket, and the agent redials until it is welcomed", async () => {
  const before = Number(await refusals());
  await query(`UPDATE refusing SET on_now = true`);
  fleet().agent({ name: "unregistered", labels: { pool: "unregistered" }, adapter: gate });
  // Refused again after a redial: the agent was not left waiting on an open socket.
  await vi.waitFor(async () => expect(Number(await refusals()) - before).toBeGreaterThan(1), { timeout: 10_000 });
  await query(`UPDATE refusing SET on_now = false`);
  const order = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["gate"] }, selector: "pool=unregistered" });
  await vi.waitFor(async () => expect(await stateOf(order.id)).toBe("running"), { timeout: 20_000 });
  runs.get(order.id)!({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await stateOf(order.id)).toBe("succeeded"));
}, 40_000);
