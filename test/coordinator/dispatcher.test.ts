// The dispatcher serves agents that share labels and mode with one claim statement per round, and
// still gives each agent only what it asked for, and work addressed to an agent to that agent.
import { afterAll, beforeAll, beforeEach, expect, test } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import type { Database } from "../../coordinator/db/database.ts";
import { openDatabase } from "../../coordinator/db/database.ts";
import { type Claimer, Dispatcher } from "../../coordinator/dispatch/dispatcher.ts";
import { workOrderInsert } from "../../coordinator/sql/work-order-insert.ts";
import type { Claimant } from "../../coordinator/sql/work-order-claim.ts";
import type { Assignment } from "../../protocol/messages.ts";
import type { Labels } from "../../protocol/selector.ts";
import { cancelAllPending, connectAgent, order } from "../store/fixtures.ts";

let db: Database;
let claims = 0;
let counting: Database;

beforeAll(async () => {
  db = await openDatabase({ kind: "pglite", dataDir: ":memory:" });
  counting = {
    ...db,
    query: (text, params) => {
      if (text.includes("FOR UPDATE SKIP LOCKED")) claims++;
      return db.query(text, params);
    },
  } as Database;
});

afterAll(async () => db?.close());

beforeEach(async () => {
  await cancelAllPending(db);
  claims = 0;
});

class FakeAgent implements Claimer {
  readonly jobs: Assignment[] = [];
  constructor(readonly claimant: Claimant) {}
  assign(jobs: Assignment[]): void {
    this.jobs.push(...jobs);
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

test("twenty like agents claiming at once are served by two statements, one job each", async () => {
  const fleet = await agents("like", 20, { pool: "p" });
  for (let i = 0; i < 30; i++) await workOrderInsert(db, order({ selector: "pool=p" }));
  const dispatcher = new Dispatcher(counting, new Bus(), (e) => expect.unreachable(String(e)));
  // The first claim starts a statement at once; the other nineteen wait for its round to end.
  for (const agent of fleet) dispatcher.claim(agent, 1);
  await until(() => fleet.every((a) => a.jobs.length === 1));
  expect(claims).toBe(2);
  const ids = fleet.map((a) => a.jobs[0]!.workOrderId);
  expect(new Set(ids).size).toBe(20);
  dispatcher.stop();
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
