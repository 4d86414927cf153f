// A coordinator whose database lost commits it had acknowledged (PGlite after a power loss, a
// failover to a lagging replica) holds an earlier record of a job than its agent was told. The
// agent tells it again what it lost: the job's state messages, a line in the log where output was
// lost, then what was never acknowledged, each under the number it had; a job whose end was lost
// is told its end again, not run again. Real coordinator and agent over loopback; the loss is put
// into the database by the test, which puts the job's rows back as a snapshot had them.
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import type { WorkOrderView } from "../../protocol/api.ts";
import { useInProcessCoordinator } from "../support/in-process.ts";
import { Proxy } from "../support/proxy.ts";

type Run = { begin: () => void; log: (text: string) => void; end: (result: RunResult) => void };
const runs = new Map<string, Run>();

/** A run whose start waits for `begin`, which prints what the test says, until the test ends it. */
const scripted: Adapter<unknown> = {
  name: "exec",
  spec: z.unknown(),
  start: async ({ workOrderId, log }) => {
    let begin!: () => void;
    let end!: (result: RunResult) => void;
    const begun = new Promise<void>((resolve) => (begin = resolve));
    const result = new Promise<RunResult>((resolve) => (end = resolve));
    runs.set(workOrderId, { begin, log, end });
    await begun;
    return { result, cancel: async () => end({ outcome: "cancelled", exitCode: null }) };
  },
};

const fleet = useInProcessCoordinator();
let proxy: Proxy;

beforeAll(async () => {
  proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(fleet().coordinator.url).port) });
});

afterAll(async () => {
  for (const run of runs.values()) run.end({ outcome: "succeeded", exitCode: 0 });
  await proxy.close();
});

const api = <T>(method: string, path: string, body?: unknown) => fleet().api<T>(method, path, body);
const query = <T>(sql: string) => fleet().coordinator.db.query<T>(sql);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type View = WorkOrderView & { events: { from: string | null; to: string }[] };

async function logOf(orderId: string): Promise<string> {
  const response = await fetch(`${fleet().coordinator.url}/v1/work-orders/${orderId}/log`, { headers: { authorization: `Bearer ${fleet().ciToken}` } });
  return response.text();
}

async function columns(table: string): Promise<string> {
  const rows = await query<{ list: string }>(`SELECT string_agg(quote_ident(column_name), ', ') AS list FROM information_schema.columns WHERE table_name = '${table}'`);
  return rows[0]!.list;
}

/** Copies the work order's rows, and returns what puts them back as they are now, as a database that lost the commits since would. */
async function snapshot(orderId: string): Promise<() => Promise<void>> {
  const name = `snap_${orderId}`;
  await query(`CREATE TABLE ${name}_orders AS SELECT * FROM work_orders WHERE id = ${orderId}`);
  await query(`CREATE TABLE ${name}_jobs AS SELECT * FROM jobs WHERE work_order_id = ${orderId}`);
  const [{ last }] = (await query<{ last: string }>(`SELECT coalesce(max(id), 0)::text AS last FROM work_order_events WHERE work_order_id = ${orderId}`)) as [{ last: string }];
  return async () => {
    const orders = await columns("work_orders");
    const jobs = await columns("jobs");
    await query(`UPDATE work_orders w SET (${orders}) = (SELECT ${orders} FROM ${name}_orders s WHERE s.id = w.id) WHERE id = ${orderId}`);
    await query(`UPDATE jobs j SET (${jobs}) = (SELECT ${jobs} FROM ${name}_jobs s WHERE s.id = j.id) WHERE work_order_id = ${orderId}`);
    await query(`DELETE FROM job_logs l USING ${name}_jobs s WHERE l.job_id = s.id AND l."offset" >= s.log_bytes`);
    await query(`DELETE FROM work_order_events WHERE work_order_id = ${orderId} AND id > ${last}`);
  };
}

/** A work order run by a new agent (dialling through the proxy), once its job is `starting`. */
async function started(name: string): Promise<{ order: WorkOrderView; run: Run }> {
  fleet().agent({ name, labels: { pool: name }, adapter: scripted, url: `ws://127.0.0.1:${proxy.port}/v1/agent` });
  const order = await api<WorkOrderView>("POST", "/v1/work-orders", { spec: { command: ["scripted"] }, selector: `pool=${name}` });
  await vi.waitFor(() => expect(runs.has(order.id)).toBe(true));
  return { order, run: runs.get(order.id)! };
}

/** Waits for what the coordinator committed to be acknowledged too (acknowledgements may wait 50 ms for company). */
const acknowledged = () => sleep(300);

test("a running job whose record went back to its start is told its start and the output after the loss, and ends once", async () => {
  const { order, run } = await started("rewound");
  await vi.waitFor(async () => expect(await query<{ state: string }>(`SELECT state FROM jobs WHERE work_order_id = ${order.id}`)).toEqual([{ state: "starting" }]));
  const rewind = await snapshot(order.id);

  run.begin();
  run.log("one\n");
  await vi.waitFor(async () => expect(await logOf(order.id)).toBe("one\n"));
  run.log("two\n");
  await vi.waitFor(async () => expect(await logOf(order.id)).toBe("one\ntwo\n"));
  await acknowledged();

  proxy.cut({ refuse: true });
  await sleep(200);
  await rewind();
  run.log("three\n");
  proxy.allow();

  await vi.waitFor(async () => expect(await logOf(order.id)).toMatch(/three\n$/), { timeout: 10_000 });
  run.end({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("succeeded"), { timeout: 10_000 });
  expect(await logOf(order.id)).toMatch(/^\[jobfleet\] 2 messages of this job were lost here \(the coordinator's database lost them after acknowledging them\); output may be missing\nthree\n$/);
  const view = await api<View>("GET", `/v1/work-orders/${order.id}`);
  expect(view.attempts).toBe(1);
  expect(view.events.map((e) => `${e.from}->${e.to}`)).toEqual(["null->pending", "pending->claimed", "claimed->running", "running->succeeded"]);
}, 30_000);

/** A work order whose job said "done" and failed with exit 3, both acknowledged; and what puts its rows back to before the end. */
async function ended(name: string): Promise<{ order: WorkOrderView; rewind: () => Promise<void> }> {
  const { order, run } = await started(name);
  run.begin();
  run.log("done\n");
  await vi.waitFor(async () => expect(await logOf(order.id)).toBe("done\n"));
  await acknowledged();
  const rewind = await snapshot(order.id);
  run.end({ outcome: "failed", exitCode: 3 });
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("failed"));
  await acknowledged();
  return { order, rewind };
}

/** The job's end, told again, was taken as it was: one attempt, failed with exit 3. */
async function expectEndedOnce(orderId: string): Promise<void> {
  const view = await api<View & { latestJob: { state: string; exitCode: number | null } }>("GET", `/v1/work-orders/${orderId}`);
  expect(view.attempts).toBe(1);
  expect(view.latestJob).toMatchObject({ state: "failed", exitCode: 3 });
}

test("a job whose end was acknowledged and then lost is told its end again, not disowned and run again", async () => {
  const { order, rewind } = await ended("unended");
  proxy.cut({ refuse: true });
  await sleep(200);
  await rewind();
  expect(await fleet().stateOf(order.id)).toBe("running");
  proxy.allow();

  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("failed"), { timeout: 10_000 });
  await expectEndedOnce(order.id);
  expect(await logOf(order.id)).toBe("done\n");
}, 30_000);

test("an end lost under an open connection is found by the lease renewals, and told again once the agent reconnects", async () => {
  const { order, rewind } = await ended("unended-open");
  await rewind();
  expect(await fleet().stateOf(order.id)).toBe("running");
  // Two renewals a quarter of a heartbeat apart or more (10 s by default) find the job unknown to the session.
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("failed"), { timeout: 25_000 });
  await expectEndedOnce(order.id);
}, 40_000);

test("a database that loses commits under an open connection: the gap has the agent dial again, and the job goes on", async () => {
  const { order, run } = await started("gapped");
  run.begin();
  run.log("one\n");
  await vi.waitFor(async () => expect(await logOf(order.id)).toBe("one\n"));
  await acknowledged();
  const rewind = await snapshot(order.id);
  run.log("two\n");
  await vi.waitFor(async () => expect(await logOf(order.id)).toBe("one\ntwo\n"));
  await acknowledged();

  await rewind();
  run.log("three\n");
  await vi.waitFor(async () => expect(await logOf(order.id)).toMatch(/three\n$/), { timeout: 10_000 });
  run.end({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("succeeded"), { timeout: 10_000 });
  expect(await logOf(order.id)).toMatch(/^one\n\[jobfleet\] 1 message of this job was lost here .*\nthree\n$/);
  expect((await api<View>("GET", `/v1/work-orders/${order.id}`)).attempts).toBe(1);
}, 30_000);

test("copies of unacknowledged messages the coordinator reads late from the connection the agent left are repeats, not output out of place", async () => {
  const { order, run } = await started("stale");
  run.begin();
  const say = async (line: string) => {
    run.log(line);
    await vi.waitFor(async () => expect(await logOf(order.id)).toMatch(new RegExp(`${line}$`)));
  };
  await say("a\n");
  await acknowledged();
  const rewind = await snapshot(order.id);
  for (const line of ["b\n", "c\n", "d\n"]) await say(line);
  await acknowledged();

  // The coordinator stops reading the connection while the agent says three more lines.
  proxy.hold();
  for (const line of ["e\n", "f\n", "g\n"]) {
    run.log(line);
    await sleep(150);
  }
  // Its database loses "b" to "d"; the agent loses the connection and dials again.
  await rewind();
  proxy.dropHeldClients();
  await vi.waitFor(async () => expect(await logOf(order.id)).toMatch(/g\n$/), { timeout: 10_000 });
  // The old connection's bytes are read at last, its session replaced.
  proxy.release();
  await sleep(500);
  for (const line of ["h\n", "i\n"]) {
    run.log(line);
    await sleep(300);
  }
  run.end({ outcome: "succeeded", exitCode: 0 });
  await vi.waitFor(async () => expect(await fleet().stateOf(order.id)).toBe("succeeded"), { timeout: 10_000 });
  expect(await logOf(order.id)).toMatch(/^a\n\[jobfleet\] 3 messages of this job were lost here .*\ne\nf\ng\nh\ni\n$/);
}, 30_000);
