// The dispatcher serves agents that share labels and mode with one claim statement per round, and
// still gives each agent only what it asked for, and work addressed to an agent to that agent.
import { afterAll, beforeAll, beforeEach, expect, test } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import type { Database } from "../../coordinator/db/database.ts";
import { openDatabase } from "../../coordinator/db/database.ts";
import { type Claimer, Dispatcher } from "../../coordinator/dispatch/dispatcher.ts";
import type { Claimant } from "../../coordinator/sql/work-order-claim.ts";
import type { Assignment } from "../../protocol/messages.ts";
import { type Labels, parseSelector } from "../../protocol/selector.ts";
import { cancelAllPending, connectAgent, order, workOrderInsert } from "../store/fixtures.ts";

let db: Database;
let claims = 0;
let counting: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  counting = claimingThrough((text, params) => {
    if (text.includes("FOR UPDATE SKIP LOCKED")) claims++;
    return db.generic.query(text, params);
  });
});

/** The database with the statements the dispatcher runs (claims, under generic plans) sent through `query`. */
function claimingThrough(query: (text: string, params?: unknown[]) => Promise<unknown[]>): Database {
  return { ...db, generic: { query } } as Database;
}

afterAll(async () => db?.close());

beforeEach(async () => {
  await cancelAllPending(db);
  claims = 0;
});

class FakeAgent implements Claimer {
  readonly jobs: Assignment[] = [];
  resyncs = 0;
  constructor(readonly claimant: Claimant) {}
  assign(jobs: Assignment[]): void {
    this.jobs.push(...jobs);
  }
  resync(): void {
    this.resyncs++;
  }
}

async function agents(prefix: string, n: number, labels: Labels): Promise<FakeAgent[]> {
  const out: FakeAgent[] = [];
  for (let i = 0; i < n; i++) out.push(new FakeAgent(await connectAgent(db, `${prefix}-${i}`, labels)));
  return out;
}

async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(done()).toBe(true);
}

test("twenty like agents claiming in one turn of the event loop are served by one statement, one job each", async () => {
  const fleet = await agents("like", 20, { pool: "p" });
  for (let i = 0; i < 30; i++) await workOrderInsert(db, order({ selector: "pool=p" }));
  const dispatcher = new Dispatcher(counting, new Bus(), (e) => expect.unreachable(String(e)));
  for (const agent of fleet) dispatcher.claim(agent, 1);
  await until(() => fleet.every((a) => a.jobs.length === 1));
  expect(claims).toBe(1);
  const ids = fleet.map((a) => a.jobs[0]!.workOrderId);
  expect(new Set(ids).size).toBe(20);
  dispatcher.stop();
});

test("two sessions of one agent in one round (it reconnected) each get what each asked for", async () => {
  const [agent] = await agents("twice", 1, { pool: "twice" });
  const older = new FakeAgent(agent!.claimant);
  for (let i = 0; i < 5; i++) await workOrderInsert(db, order({ selector: "pool=twice" }));
  const dispatcher = new Dispatcher(db, new Bus(), (e) => expect.unreachable(String(e)));
  dispatcher.claim(older, 2);
  dispatcher.claim(agent!, 1);
  await until(() => older.jobs.length + agent!.jobs.length === 3);
  await new Promise((r) => setTimeout(r, 50));
  expect([older.jobs.length, agent!.jobs.length]).toEqual([2, 1]);
});

test("a wake-up fills waiting agents of each matching group, and addressed work reaches its agent", async () => {
  const linux = await agents("wl", 3, { os: "linux" });
  const mac = await agents("wm", 2, { os: "darwin" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(counting, bus, (e) => expect.unreachable(String(e)));
  for (const agent of [...linux, ...mac]) dispatcher.claim(agent, 2);
  await new Promise((r) => setTimeout(r, 50));
  expect([...linux, ...mac].every((a) => a.jobs.length === 0)).toBe(true);

  const enqueue = async (body: Record<string, unknown>) => {
    const { row } = await workOrderInsert(db, order(body));
    bus.emit("enqueued", [{ id: row.id, selector: row.selector, targetAgent: row.target_agent }]);
    return row.id;
  };
  const toMac1 = await enqueue({ agent: mac[1]!.claimant.name, selector: "os=linux" });
  const forLinux = [await enqueue({ selector: "os=linux" }), await enqueue({ selector: "os=linux" })];
  const forMac = await enqueue({ selector: "os=darwin" });
  await until(() => linux.reduce((n, a) => n + a.jobs.length, 0) === 2 && mac.reduce((n, a) => n + a.jobs.length, 0) === 2);
  expect(mac[1]!.jobs.map((j) => j.workOrderId)).toContain(toMac1);
  expect(new Set(linux.flatMap((a) => a.jobs.map((j) => j.workOrderId)))).toEqual(new Set(forLinux));
  expect(mac.flatMap((a) => a.jobs.map((j) => j.workOrderId))).toContain(forMac);
  dispatcher.stop();
});

test("an agent never gets more than it asked for, however much is waiting", async () => {
  const [one, two] = await agents("cap", 2, { pool: "cap" });
  for (let i = 0; i < 10; i++) await workOrderInsert(db, order({ selector: "pool=cap" }));
  const dispatcher = new Dispatcher(counting, new Bus(), (e) => expect.unreachable(String(e)));
  dispatcher.claim(one!, 3);
  dispatcher.claim(two!, 1);
  await until(() => one!.jobs.length === 3 && two!.jobs.length === 1);
  dispatcher.claim(two!, 2);
  await until(() => two!.jobs.length === 3);
  await new Promise((r) => setTimeout(r, 50));
  expect([one!.jobs.length, two!.jobs.length]).toEqual([3, 3]);
  const [left] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM work_orders WHERE state = 'pending'`);
  expect(left!.n).toBe(4);
  dispatcher.stop();
});

/** The database with claim statements slowed, failed, and counted while in flight. */
function slowed(delayMs: number, failFirst: number) {
  let inFlight = 0;
  let failures = failFirst;
  const stats = { maxInFlight: 0 };
  const wrapped = claimingThrough(async (text, params) => {
    if (!text.includes("FOR UPDATE SKIP LOCKED")) return db.generic.query(text, params);
    if (failures-- > 0) throw new Error("connection reset");
    stats.maxInFlight = Math.max(stats.maxInFlight, ++inFlight);
    await new Promise((r) => setTimeout(r, delayMs));
    return db.generic.query(text, params).finally(() => inFlight--);
  });
  return { db: wrapped, stats };
}

test("slots that open while a round waits are claimed by another round in flight, each within its want", async () => {
  const fleet = await agents("rounds", 4, { pool: "r" });
  for (let i = 0; i < 12; i++) await workOrderInsert(db, order({ selector: "pool=r" }));
  const { db: slow, stats } = slowed(100, 0);
  const dispatcher = new Dispatcher(slow, new Bus(), (e) => expect.unreachable(String(e)));
  for (const [i, agent] of fleet.entries()) {
    dispatcher.claim(agent, i + 1);
    await new Promise((r) => setTimeout(r, 20));
  }
  await until(() => fleet.every((a, i) => a.jobs.length === i + 1));
  expect(stats.maxInFlight).toBeGreaterThan(1);
  await new Promise((r) => setTimeout(r, 150));
  expect(fleet.map((a) => a.jobs.length)).toEqual([1, 2, 3, 4]);
  expect(new Set(fleet.flatMap((a) => a.jobs.map((j) => j.workOrderId))).size).toBe(10);
  dispatcher.stop();
});

test("a claim statement that fails leaves the slots open and is tried again", async () => {
  const [agent] = await agents("retry", 1, { pool: "f" });
  await workOrderInsert(db, order({ selector: "pool=f" }));
  const { db: failing } = slowed(0, 1);
  const errors: unknown[] = [];
  const dispatcher = new Dispatcher(failing, new Bus(), (e) => errors.push(e));
  dispatcher.claim(agent!, 1);
  await until(() => agent!.jobs.length === 1);
  expect(errors).toHaveLength(1);
  dispatcher.stop();
});

test.each([
  { when: "after it committed, its connection lost", code: "CONNECTION_CLOSED", runs: true, resyncs: 1 },
  { when: "refused by the database", code: "40P01", runs: false, resyncs: 0 },
])("a claim that fails $when has its agents reconnect: $resyncs", async ({ code, runs, resyncs }) => {
  const [agent] = await agents(`unseen-${code}`, 1, { pool: `unseen-${code}` });
  const { row } = await workOrderInsert(db, order({ selector: `pool=unseen-${code}` }));
  let failures = 1;
  const failing = claimingThrough(async (text, params) => {
    if (failures-- <= 0) return db.generic.query(text, params);
    if (runs) await db.generic.query(text, params);
    throw Object.assign(new Error(`failed: ${code}`), { code });
  });
  const errors: unknown[] = [];
  const dispatcher = new Dispatcher(failing, new Bus(), (e) => errors.push(e));
  dispatcher.claim(agent!, 1);
  await until(() => errors.length === 1);
  expect(agent!.resyncs).toBe(resyncs);
  expect(agent!.jobs).toEqual([]);
  // Committed, the job is the agent's in the database alone: its reconnect's welcome will list it.
  const [state] = await db.query<{ state: string }>(`SELECT state FROM work_orders WHERE id = $1`, [row.id]);
  expect(state!.state).toBe(runs ? "claimed" : "pending");
  dispatcher.stop();
});

/** The database with every claim statement's member count recorded; `hold` delays the answer. */
function recording(holdMs = 0) {
  const rounds: number[] = [];
  const wrapped = claimingThrough(async (text, params) => {
    const result = await db.generic.query(text, params);
    if (text.includes("FOR UPDATE SKIP LOCKED")) {
      // The members' agent ids, an array literal: `{1,2,3}`.
      rounds.push(String(params![0]).split(",").length);
      if (holdMs > 0) await new Promise((r) => setTimeout(r, holdMs));
    }
    return result;
  });
  return { db: wrapped, rounds };
}

const enqueue = async (bus: Bus, body: Record<string, unknown>) => {
  const { row } = await workOrderInsert(db, order(body));
  bus.emit("enqueued", [{ id: row.id, selector: row.selector, targetAgent: row.target_agent }]);
  return row.id;
};

test("agents joining a group that found nothing are each asked for once, not with the whole group again", async () => {
  const fleet = await agents("storm", 40, { pool: "storm" });
  const { db: recorded, rounds } = recording();
  const bus = new Bus();
  const dispatcher = new Dispatcher(recorded, bus, (e) => expect.unreachable(String(e)));
  for (const agent of fleet) {
    dispatcher.claim(agent, 1);
    await new Promise((r) => setTimeout(r, 2));
  }
  await new Promise((r) => setTimeout(r, 100));
  expect(rounds.reduce((a, b) => a + b, 0)).toBe(40);

  // New work wakes the group: one round asks for as many as the orders, the longest waiting first.
  const id = await enqueue(bus, { selector: "pool=storm" });
  await until(() => fleet[0]!.jobs.some((j) => j.workOrderId === id));
  expect(rounds.slice(40)).toEqual([1]);
  const two = [await workOrderInsert(db, order({ selector: "pool=storm" })), await workOrderInsert(db, order({ selector: "pool=storm" }))];
  bus.emit("enqueued", two.map(({ row }) => ({ id: row.id, selector: row.selector, targetAgent: row.target_agent })));
  await until(() => fleet[1]!.jobs.length === 1 && fleet[2]!.jobs.length === 1);
  // It took every order there could be: the group found nothing more, without asking again.
  await new Promise((r) => setTimeout(r, 50));
  expect(rounds.slice(40)).toEqual([1, 2]);

  // A sweep cannot say what arrived: everyone waiting is asked.
  dispatcher.sweep();
  await until(() => rounds.length === 43);
  expect(rounds.at(-1)).toBe(37);
  dispatcher.stop();
});

test("a wake-up's round that takes older work than the order woken for asks everyone waiting next", async () => {
  const fleet = await agents("unhinted", 5, { pool: "unhinted" });
  const { db: recorded, rounds } = recording();
  const bus = new Bus();
  const dispatcher = new Dispatcher(recorded, bus, (e) => expect.unreachable(String(e)));
  for (const agent of fleet) dispatcher.claim(agent, 1);
  await until(() => rounds.length === 1);
  // Pending without a wake-up (as rows a failed claim held while this group looked would be).
  const { row: quiet } = await workOrderInsert(db, order({ selector: "pool=unhinted" }));
  const woken = await enqueue(bus, { selector: "pool=unhinted" });
  await until(() => fleet.filter((a) => a.jobs.length === 1).length === 2);
  expect(new Set(fleet.flatMap((a) => a.jobs.map((j) => j.workOrderId)))).toEqual(new Set([quiet.id, woken]));
  expect(rounds).toEqual([5, 1, 4]);
  dispatcher.stop();
});

test("work enqueued while a round is in flight, after its scan, is still taken", async () => {
  const [agent] = await agents("race", 1, { pool: "race" });
  const { db: held } = recording(150);
  const bus = new Bus();
  const dispatcher = new Dispatcher(held, bus, (e) => expect.unreachable(String(e)));
  dispatcher.claim(agent!, 1);
  await new Promise((r) => setTimeout(r, 50));
  const id = await enqueue(bus, { selector: "pool=race" });
  await until(() => agent!.jobs.some((j) => j.workOrderId === id));
  dispatcher.stop();
});

test("work addressed to an agent before it joined a group that found nothing reaches it on its first claim", async () => {
  const [early, late] = await agents("addr", 2, { pool: "addr" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(db, bus, (e) => expect.unreachable(String(e)));
  dispatcher.claim(early!, 1);
  await new Promise((r) => setTimeout(r, 50));
  const id = await enqueue(bus, { agent: late!.claimant.name, selector: "pool=elsewhere" });
  await new Promise((r) => setTimeout(r, 50));
  expect(early!.jobs).toEqual([]);
  dispatcher.claim(late!, 1);
  await until(() => late!.jobs.some((j) => j.workOrderId === id));
  dispatcher.stop();
});

test("a large group is served in rounds of at most a thousand slots, every agent its one job", { timeout: 60_000 }, async () => {
  const fleet: FakeAgent[] = [];
  for (let i = 0; i < 1200; i++) fleet.push(new FakeAgent({ agentId: String(i + 1), name: `big-${i}`, labels: { pool: "big" }, queueMode: true }));
  await db.query(
    `INSERT INTO agents (id, name, labels, capacity, mode, version) SELECT i, 'big-' || (i - 1), '{"pool":"big"}', 1, 'queue', 'test'
     FROM generate_series(1, 1200) i ON CONFLICT (id) DO NOTHING`,
  );
  // Ids given by hand: move the sequence past them, for agents that connect in later tests.
  await db.query(`SELECT setval('agents_id_seq', (SELECT max(id) FROM agents))`);
  await db.query(
    `INSERT INTO work_orders (adapter, spec, selector, selector_text, labels, metadata)
     SELECT 'exec', '{"command":["true"]}', '[{"key":"pool","op":"in","values":["big"]}]', 'pool=big', '{}', '{}' FROM generate_series(1, 1500)`,
  );
  const { db: recorded, rounds } = recording();
  const dispatcher = new Dispatcher(recorded, new Bus(), (e) => expect.unreachable(String(e)));
  for (const agent of fleet) dispatcher.claim(agent, 1);
  await until(() => fleet.every((a) => a.jobs.length === 1));
  expect(Math.max(...rounds)).toBeLessThanOrEqual(1000);
  expect(rounds.reduce((a, b) => a + b, 0)).toBe(1200);
  dispatcher.stop();
});

test.each([
  ["in another group", "moved", "after"],
  ["in the same group", "stayed", "before"],
])("addressed work finds an agent's newest session, even after its older one leaves, %s", async (_, name, pool) => {
  const bus = new Bus();
  const dispatcher = new Dispatcher(counting, bus, (e) => expect.unreachable(String(e)));
  const older = new FakeAgent(await connectAgent(db, name, { pool: "before" }));
  dispatcher.claim(older, 1);
  // Reconnected: a new session, and only then the old one goes.
  const newer = new FakeAgent(await connectAgent(db, name, { pool }));
  dispatcher.claim(newer, 1);
  await new Promise((r) => setTimeout(r, 50));
  dispatcher.remove(older);
  const { row } = await workOrderInsert(db, order({ agent: name, selector: "pool=nowhere" }));
  bus.emit("enqueued", [{ id: row.id, selector: row.selector, targetAgent: row.target_agent }]);
  await until(() => newer.jobs.length === 1);
  expect(newer.jobs[0]!.workOrderId).toBe(row.id);
  expect(older.jobs).toEqual([]);
  dispatcher.stop();
});

test("one wake-up spreads its orders over every matching group with room, and only those", async () => {
  const hosts = await Promise.all(Array.from({ length: 5 }, (_, i) => agents(`host${i}`, 1, { os: "linux", host: `h${i}` })));
  const [other] = await agents("other", 1, { os: "darwin" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(counting, bus, (e) => expect.unreachable(String(e)));
  for (const [agent] of hosts) dispatcher.claim(agent!, 2);
  dispatcher.claim(other!, 2);
  await new Promise((r) => setTimeout(r, 50));
  const rows = [];
  for (let i = 0; i < 8; i++) rows.push((await workOrderInsert(db, order({ selector: "os=linux" }))).row);
  bus.emit(
    "enqueued",
    rows.map((row) => ({ id: row.id, selector: row.selector, targetAgent: row.target_agent })),
  );
  const linux = hosts.map(([agent]) => agent!);
  await until(() => linux.reduce((n, a) => n + a.jobs.length, 0) === 8);
  expect(linux.every((a) => a.jobs.length <= 2)).toBe(true);
  expect(new Set(linux.flatMap((a) => a.jobs.map((j) => j.workOrderId)))).toEqual(new Set(rows.map((r) => r.id)));
  expect(other!.jobs).toEqual([]);
  dispatcher.stop();
});

/** The database with the next claim statement failing once `failNext()` is called. */
function failingOnce() {
  let fail = false;
  const failing = claimingThrough(async (text, params) => {
    if (fail && text.includes("FOR UPDATE SKIP LOCKED")) {
      fail = false;
      throw new Error("connection reset");
    }
    return db.generic.query(text, params);
  });
  return { db: failing, failNext: () => (fail = true) };
}

const stateOf = async (id: string) => (await db.query<{ state: string }>(`SELECT state::text AS state FROM work_orders WHERE id = $1`, [id]))[0]!.state;

test.each([
  ["a more urgent order taken meanwhile", "urgent"],
  ["the member it asked leaving before the retry", "leave"],
])("a wake-up's failed round leaves its order to be taken, after %s", async (_, how) => {
  const fleet = await agents(`failwake-${how}`, 3, { pool: `failwake-${how}` });
  const bus = new Bus();
  const { db: failing, failNext } = failingOnce();
  const errors: unknown[] = [];
  const dispatcher = new Dispatcher(failing, bus, (e) => errors.push(e));
  for (const agent of fleet) dispatcher.claim(agent, 1);
  await new Promise((r) => setTimeout(r, 50));
  failNext();
  const first = await enqueue(bus, { selector: `pool=failwake-${how}` });
  await until(() => errors.length === 1);
  // Within the second before the failed round is tried again.
  if (how === "urgent") {
    const urgent = await enqueue(bus, { selector: `pool=failwake-${how}`, priority: 10 });
    await until(() => fleet.some((a) => a.jobs.some((j) => j.workOrderId === urgent)));
  } else {
    dispatcher.remove(fleet.find((a) => a.jobs.length === 0)!);
  }
  await until(() => fleet.some((a) => a.jobs.some((j) => j.workOrderId === first)));
  dispatcher.stop();
});

test("an order woken for while a quiet group's only slot was held is taken once the hold is given back", async () => {
  const [agent] = await agents("held", 1, { pool: "held" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(db, bus, (e) => expect.unreachable(String(e)));
  dispatcher.claim(agent!, 1);
  await new Promise((r) => setTimeout(r, 50));
  const [hold] = dispatcher.hold([{ selector: parseSelector("pool=held") }]);
  expect(hold?.agentId).toBe(agent!.claimant.agentId);
  // While the held order's insert runs, another order is enqueued; its order was not created.
  const other = await enqueue(bus, { selector: "pool=held" });
  await new Promise((r) => setTimeout(r, 50));
  expect(await stateOf(other)).toBe("pending");
  hold!.release();
  await until(() => agent!.jobs.some((j) => j.workOrderId === other));
  dispatcher.stop();
});

test("work addressed to an agent before it joined reaches it even when its first slot was held and given back", async () => {
  const [first, late] = await agents("heldlate", 2, { pool: "heldlate" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(db, bus, (e) => expect.unreachable(String(e)));
  dispatcher.claim(first!, 1);
  await new Promise((r) => setTimeout(r, 50));
  const taken = await enqueue(bus, { selector: "pool=heldlate" });
  await until(() => first!.jobs.some((j) => j.workOrderId === taken));
  await new Promise((r) => setTimeout(r, 20));
  const addressed = await enqueue(bus, { agent: late!.claimant.name, selector: "pool=heldlate" });
  // It joins, and in the same turn, before its first round, an enqueue holds its slot.
  dispatcher.claim(late!, 1);
  const [hold] = dispatcher.hold([{ selector: parseSelector("pool=heldlate") }]);
  expect(hold?.agentId).toBe(late!.claimant.agentId);
  await new Promise((r) => setTimeout(r, 50));
  hold!.release();
  await until(() => late!.jobs.some((j) => j.workOrderId === addressed));
  dispatcher.stop();
});

test("work addressed to an agent whose own round is under way, and missed it, reaches the agent when that round ends", async () => {
  const [x, y] = await agents("inround", 2, { pool: "inround" });
  const bus = new Bus();
  let holdX = false;
  // X's claim runs its statement (which finds nothing), then waits while the order is enqueued.
  const held = claimingThrough(async (text, params) => {
    const result = await db.generic.query(text, params);
    const forX = text.includes("FOR UPDATE SKIP LOCKED") && String(params![1]).includes(`"${x!.claimant.name}"`) && !String(params![1]).includes(`"${y!.claimant.name}"`);
    if (holdX && forX) {
      holdX = false;
      await new Promise((r) => setTimeout(r, 200));
    }
    return result;
  });
  const dispatcher = new Dispatcher(held, bus, (e) => expect.unreachable(String(e)));
  dispatcher.claim(x!, 1);
  dispatcher.claim(y!, 1);
  await new Promise((r) => setTimeout(r, 50)); // the group found nothing
  holdX = true;
  // X comes back (a reconnect): its round looks, finds nothing, and is held while the order comes.
  dispatcher.remove(x!);
  dispatcher.claim(x!, 1);
  await new Promise((r) => setTimeout(r, 30));
  const id = await enqueue(bus, { agent: x!.claimant.name, selector: "pool=inround" });
  await until(() => x!.jobs.some((j) => j.workOrderId === id));
  dispatcher.stop();
});

test("an order woken for in a group whose rounds are all in flight goes to another group that may run it when the first one's agent leaves", async () => {
  const [busy] = await agents("parked", 1, { pool: "parked" });
  const [other] = await agents("parked-gpu", 1, { pool: "parked", gpu: "yes" });
  const bus = new Bus();
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  // The busy agent's rounds wait, as on a slow commit.
  const gated = claimingThrough(async (text, params) => {
    const result = await db.generic.query(text, params);
    if (text.includes("FOR UPDATE SKIP LOCKED") && params![3] === JSON.stringify(busy!.claimant.labels)) await gate;
    return result;
  });
  const dispatcher = new Dispatcher(gated, bus, (e) => expect.unreachable(String(e)));
  const turn = () => new Promise((r) => setTimeout(r, 20));
  // Three rounds in flight, the most a group runs at once, and a fourth slot waiting for one.
  for (let i = 0; i < 4; i++) {
    dispatcher.claim(busy!, 1);
    await turn();
  }
  dispatcher.claim(other!, 1);
  await turn(); // the other group found nothing
  const id = await enqueue(bus, { selector: "pool=parked" });
  // The wake-up offered the order to the busy agent's group, the first that may run it; its agent leaves.
  dispatcher.remove(busy!);
  open();
  await until(() => other!.jobs.some((j) => j.workOrderId === id));
  dispatcher.stop();
});

test("an order woken for that a full round passed over goes to another group that may run it, though the first still has slots", async () => {
  // The gpu group forms first, so the wake-up offers it the order first.
  const [y1, y2] = await agents("passed-gpu", 2, { pool: "passed", gpu: "yes" });
  const [x] = await agents("passed", 1, { pool: "passed" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(db, bus, (e) => expect.unreachable(String(e)));
  dispatcher.claim(y1!, 1);
  dispatcher.claim(y2!, 1);
  dispatcher.claim(x!, 1);
  await new Promise((r) => setTimeout(r, 50));
  // Urgent gpu work pending without a wake-up (a retry come due, another replica's order on its way).
  for (let i = 0; i < 2; i++) await workOrderInsert(db, order({ selector: "pool=passed,gpu=yes", priority: 10 }));
  const id = await enqueue(bus, { selector: "pool=passed" });
  await until(() => x!.jobs.some((j) => j.workOrderId === id));
  expect(y1!.jobs.length + y2!.jobs.length).toBe(2);
  dispatcher.stop();
});

test("a quiet group that a wake-up found full is quiet no more: its next slot goes to the order woken for, not to a newer one held for it", async () => {
  const [x] = await agents("full-quiet", 1, { pool: "full-quiet" });
  const bus = new Bus();
  const dispatcher = new Dispatcher(db, bus, (e) => expect.unreachable(String(e)));
  const selector = parseSelector("pool=full-quiet");
  dispatcher.claim(x!, 1);
  await new Promise((r) => setTimeout(r, 50));
  // Its one slot held for an order created claimed for it: the agent is busy.
  expect(dispatcher.hold([{ selector }])[0]?.agentId).toBe(x!.claimant.agentId);
  const urgent = await enqueue(bus, { selector: "pool=full-quiet", priority: 100 });
  await new Promise((r) => setTimeout(r, 20));
  // The agent finishes and claims again; in the same turn a routine order is enqueued.
  dispatcher.claim(x!, 1);
  expect(dispatcher.hold([{ selector }])).toEqual([undefined]);
  await until(() => x!.jobs.some((j) => j.workOrderId === urgent));
  dispatcher.stop();
});
