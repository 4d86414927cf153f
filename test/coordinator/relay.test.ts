import postgres from "postgres";
import { expect, test, vi } from "vitest";
import { Bus } from "../../coordinator/bus.ts";
import { type Database, openDatabase } from "../../coordinator/db/database.ts";
import { type Claimer, Dispatcher } from "../../coordinator/dispatch/dispatcher.ts";
import { type Message, pack } from "../../coordinator/relay/pack.ts";
import { CHANNEL, type Listener, Relay } from "../../coordinator/relay/relay.ts";
import type { Assignment } from "../../protocol/messages.ts";
import { parseSelector } from "../../protocol/selector.ts";
import { connectAgent, order, workOrderInsert } from "../store/fixtures.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase, TEST_DATABASE_URL } from "../support/databases.ts";

/** A valid selector (under the API's 4,096 chars) that is about 18 KB as JSON; it matches `os=linux`. */
const HUGE_SELECTOR = ["os=linux", ...Array.from({ length: 600 }, (_, i) => `!x${i}`)].join(",");
const EUROS = "\u20ac".repeat(1024);

test("events are packed into as few notifications as fit under Postgres' 8000-byte limit, none lost", () => {
  const orders = Array.from({ length: 500 }, (_, i) => ({ id: String(i + 1), selector: parseSelector("os=linux,arch in (amd64,arm64)"), targetAgent: null }));
  const changed = Array.from({ length: 300 }, (_, i) => ["changed", [String(i)]] as ["changed", [string]]);
  const payloads = pack("me", { events: [["enqueued", [orders]], ...changed] });
  expect(payloads.length).toBeGreaterThan(1);
  for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8000);
  const events = payloads.flatMap((p) => (JSON.parse(p) as { from: string; events: [string, unknown[]][] }).events);
  expect(events.filter(([name]) => name === "enqueued").map(([, [batch]]) => (batch as { id: string }[])[0]!.id)).toEqual(orders.map((o) => o.id));
  expect(events.filter(([name]) => name === "changed")).toEqual(changed);
  expect(payloads.every((p) => JSON.parse(p).from === "me")).toBe(true);
});

test("payloads are measured in bytes, and an order whose selector does not fit goes without it", () => {
  const cancels = [1, 2, 3].map((i) => ["cancel", [{ jobId: String(i), agentId: "a", reason: EUROS }]] as ["cancel", [{ jobId: string; agentId: string; reason: string }]]);
  const huge = { id: "9", selector: parseSelector(HUGE_SELECTOR), targetAgent: null };
  const payloads = pack("me", { events: [...cancels, ["enqueued", [[huge]]]] });
  for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8000);
  const events = payloads.flatMap((p) => JSON.parse(p).events);
  expect(events).toEqual([...cancels, ["enqueued", [[{ ...huge, selector: null }]]]]);
});

test("an event that cannot be made to fit is left out and reported, the rest sent", () => {
  const tooLarge: unknown[] = [];
  const payloads = pack("me", { events: [["changed", ["x".repeat(8000)]], ["changed", ["1"]]] }, (event) => tooLarge.push(event[0]));
  expect(tooLarge).toEqual(["changed"]);
  expect(payloads.map((p) => JSON.parse(p).events)).toEqual([[["changed", ["1"]]]]);
});

test("watch lists too long for one notification are split; the flags go in the first only", () => {
  const watch = Array.from({ length: 2_000 }, (_, i) => String(10_000_000 + i));
  const unwatch = ["1", "2"];
  const payloads = pack("me", { events: [["changed", ["5"]]], watch, unwatch, reset: true, hello: true });
  expect(payloads.length).toBeGreaterThan(1);
  for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8000);
  const messages = payloads.map((p) => JSON.parse(p));
  expect(messages.map((m) => [m.reset, m.hello])).toEqual(messages.map((_, i) => (i === 0 ? [true, true] : [undefined, undefined])));
  expect(messages.flatMap((m) => m.watch)).toEqual(watch);
  expect(messages.flatMap((m) => m.unwatch ?? [])).toEqual(unwatch);
  expect(messages.flatMap((m) => m.events)).toEqual([["changed", ["5"]]]);
  // Every notification says what it watches, if only nothing: the mark of this version.
  expect(messages.every((m) => Array.isArray(m.watch))).toBe(true);
  expect(pack("me", { events: [], reset: true, watch: [] }).map((p) => JSON.parse(p))).toEqual([{ from: "me", reset: true, events: [], watch: [] }]);
});

test("nothing to send makes no notification", () => {
  expect(pack("me", { events: [], watch: [], unwatch: [] })).toEqual([]);
});

const fail = (error: unknown) => expect.unreachable(String(error));

type Fresh = {
  /** A coordinator's database on it. */
  open(): Promise<Database>;
  /** Starts the relay. */
  start(relay: Relay): Promise<Relay>;
  /** A plain postgres-js client on it (as a coordinator of an earlier version would have), under `name` if given. */
  client(name?: string): postgres.Sql;
};

/**
 * A fresh database for `run`: the relays it starts there are stopped, then what it opened is closed
 * and the database dropped, however `run` ends (stopping or closing twice is harmless).
 */
async function onFreshDatabase(run: (fresh: Fresh) => Promise<void>): Promise<void> {
  const url = (await createPostgresDatabase()).toString();
  const relays: Relay[] = [];
  const closers: (() => Promise<unknown>)[] = [];
  try {
    await run({
      open: async () => {
        const db = await openDatabase({ kind: "postgres", url });
        closers.push(() => db.close());
        return db;
      },
      start: async (relay) => {
        relays.push(relay);
        await relay.start();
        return relay;
      },
      client: (name) => {
        const sql = postgres(url, { max: 1, onnotice: () => {}, ...(name !== undefined && { connection: { application_name: name } }) });
        closers.push(() => sql.end());
        return sql;
      },
    });
  } finally {
    for (const relay of relays.reverse()) await relay.stop();
    await Promise.all(closers.map((close) => close()));
    await dropPostgresDatabase(new URL(url));
  }
}

/**
 * Two coordinators' relays on one fresh database: what goes on bus A should come out on bus B.
 * `run` starts once B has heard A's welcome (A, alone until then, starts sending on B's hello),
 * and with it a wake-up for any queue ("0").
 */
async function withRelays(run: (busA: Bus, busB: Bus, b: Database) => Promise<void>): Promise<void> {
  await onFreshDatabase(async ({ open, start }) => {
    const [a, b] = [await open(), await open()];
    const [busA, busB] = [new Bus(), new Bus()];
    let welcomed = 0;
    await start(new Relay(busA, a.listener!, () => {}, fail));
    await start(new Relay(busB, b.listener!, () => welcomed++, fail));
    await vi.waitFor(() => expect(welcomed).toBe(1), { timeout: 5_000 });
    await run(busA, busB, b);
  });
}

/** The cancels and the ids of enqueued orders `bus` delivers, in order. */
function heard(bus: Bus) {
  const cancels: unknown[] = [];
  const enqueued: string[] = [];
  bus.on("cancel", (cancel) => cancels.push(cancel));
  bus.on("enqueued", (orders) => enqueued.push(...orders.map((o) => o.id)));
  return { cancels, enqueued };
}

/** A wake-up for any queue: an order relayed without its selector. */
const wake = (bus: Bus, id: string) => bus.emit("enqueued", [{ id, selector: null, targetAgent: null }]);

/** A second coordinator, B, starts relaying on `db`; returns once it has heard the others' welcome. */
async function joined(start: Fresh["start"], db: Database, timing?: { checkEveryMs: number }) {
  const bus = new Bus();
  const { enqueued } = heard(bus);
  await start(new Relay(bus, db.listener!, () => {}, fail, timing));
  await vi.waitFor(() => expect(enqueued).toContain("0"), { timeout: 5_000 });
  return { bus, enqueued };
}

/**
 * `listener`, but once armed its next notification that `when` picks fails (after `delayMs`), as on
 * a connection reset; `armed` says whether that is still to come.
 */
function failingOnce(listener: Listener, when: (messages: Message[]) => boolean = () => true, delayMs = 0) {
  const state = { armed: false };
  const flaky: Listener = {
    ...listener,
    notify: async (channel, payloads) => {
      if (!state.armed || !when(payloads.map((p) => JSON.parse(p)))) return listener.notify(channel, payloads);
      state.armed = false;
      await new Promise((r) => setTimeout(r, delayMs));
      throw new Error("connection reset");
    },
  };
  return { listener: flaky, state };
}

/** Waits for the follower `woken()` counts to be woken (the answer to its watch), then for a change of `id` on `bus` to wake it once more. */
async function answeredThenRelayed(bus: Bus, id: string, woken: () => number): Promise<void> {
  await vi.waitFor(() => expect(woken()).toBeGreaterThan(0), { timeout: 5_000 });
  const before = woken();
  bus.emit("changed", id);
  await vi.waitFor(() => expect(woken()).toBe(before + 1), { timeout: 5_000 });
}

/** Waits until what `emit` emits no longer adds to `count()` within 50 ms: it is not sent. */
async function untilNotSent(emit: () => void, count: () => number): Promise<void> {
  await vi.waitFor(
    async () => {
      const before = count();
      emit();
      await new Promise((r) => setTimeout(r, 50));
      expect(count()).toBe(before);
    },
    { timeout: 5_000 },
  );
}

describePostgres("relay over a real Postgres LISTEN/NOTIFY", () => {
  test("a flush of many notifications arrives whole and in order, free text included", async () => {
    await withRelays(async (busA, busB) => {
      const { cancels, enqueued } = heard(busB);
      const reason = `he said "stop" \\ 'now' \u00fcnicode 🎉\n{"not": "json"}`;
      const orders = Array.from({ length: 500 }, (_, i) => ({ id: String(i + 1), selector: parseSelector("os=linux"), targetAgent: null }));
      busA.emit("cancel", { jobId: "1", agentId: "2", reason });
      busA.emit("enqueued", orders);
      await vi.waitFor(() => expect(enqueued).toHaveLength(500), { timeout: 5_000 });
      expect(enqueued).toEqual(orders.map((o) => o.id));
      expect(cancels).toEqual([{ jobId: "1", agentId: "2", reason }]);
    });
  });

  test("repeated changes of one work order within a gathering window reach the other coordinator once", async () => {
    await withRelays(async (busA, busB) => {
      const seen: string[] = [];
      busB.on("changed", (id) => seen.push(id));
      busB.watch("7", () => {});
      busB.watch("8", () => {});
      // Each watch is answered with a change of its own.
      await vi.waitFor(() => expect(seen.sort()).toEqual(["7", "8"]), { timeout: 5_000 });
      seen.length = 0;
      for (const id of ["7", "7", "8", "7", "8"]) busA.emit("changed", id);
      await vi.waitFor(() => expect(seen).toEqual(["7", "8"]), { timeout: 5_000 });
      busA.emit("changed", "7");
      await vi.waitFor(() => expect(seen).toEqual(["7", "8", "7"]), { timeout: 5_000 });
    });
  });

  test("multi-byte reasons are packed by bytes: every cancel and wake-up of the flush arrives", async () => {
    await withRelays(async (busA, busB) => {
      const { cancels, enqueued } = heard(busB);
      const sent = [1, 2, 3].map((i) => ({ jobId: String(i), agentId: "a", reason: EUROS }));
      for (const cancel of sent) busA.emit("cancel", cancel);
      busA.emit("enqueued", [{ id: "4", selector: parseSelector("os=linux"), targetAgent: null }]);
      await vi.waitFor(() => expect([cancels, enqueued]).toEqual([sent, ["4"]]), { timeout: 5_000 });
    });
  });

  test("an order with a selector too large to notify still wakes the other replica's matching group", async () => {
    await withRelays(async (busA, busB, b) => {
      const assigned: string[] = [];
      const agent = async (name: string, os: string): Promise<Claimer> => ({
        claimant: await connectAgent(b, name, { os }),
        assign: (jobs: Assignment[]) => assigned.push(...jobs.map((j) => `${name}:${j.workOrderId}`)),
        resync: () => expect.unreachable("no claim fails here"),
      });
      // The group that cannot run it joins first, with room for both orders: it is the first offered them.
      const [mac, linux] = [await agent("mac", "darwin"), await agent("linux", "linux")];
      const dispatcher = new Dispatcher(b, busB, (e) => expect.unreachable(String(e)));
      const enqueued: string[] = [];
      busB.on("enqueued", (orders) => enqueued.push(...orders.map((o) => o.id)));
      try {
        dispatcher.claim(mac, 2);
        dispatcher.claim(linux, 1);
        await new Promise((r) => setTimeout(r, 100));
        const { row: huge } = await workOrderInsert(b, order({ selector: HUGE_SELECTOR }));
        const { row: small } = await workOrderInsert(b, order({ selector: "os=darwin" }));
        busA.emit("cancel", { jobId: "1", agentId: "a", reason: "stop" });
        busA.emit("enqueued", [huge, small].map((row) => ({ id: row.id, selector: row.selector, targetAgent: null })));
        await vi.waitFor(() => expect(assigned.sort()).toEqual([`linux:${huge.id}`, `mac:${small.id}`]), { timeout: 5_000 });
        expect(enqueued).toEqual([huge.id, small.id]);
      } finally {
        dispatcher.stop();
      }
    });
  });

  test("a lone coordinator notifies nothing; one that joins is sent to at once and looks again; once it leaves, nothing again", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const a = await open();
      const payloads: string[] = [];
      const counted: Listener = { ...a.listener!, notify: (channel, sent) => (payloads.push(...sent), a.listener!.notify(channel, sent)) };
      const carrying = () => payloads.filter((p) => JSON.parse(p).events.length > 0).length;
      const busA = new Bus();
      await start(new Relay(busA, counted, () => {}, fail, { checkEveryMs: 100 }));
      wake(busA, "1");
      await new Promise((r) => setTimeout(r, 200));
      expect(carrying()).toBe(0);

      const b = await open();
      const busB = new Bus();
      let resyncs = 0;
      const { enqueued } = heard(busB);
      const relayB = await start(new Relay(busB, b.listener!, () => resyncs++, fail, { checkEveryMs: 100 }));
      // A started sending on B's hello, before its own next look, and said so: B looked again, and
      // heard the welcome's wake-up for any queue ("0").
      await vi.waitFor(() => expect(resyncs).toBe(1), { timeout: 5_000 });
      busA.emit("enqueued", [{ id: "5", selector: parseSelector("os=linux"), targetAgent: null }]);
      await vi.waitFor(() => expect(enqueued).toEqual(["0", "5"]), { timeout: 5_000 });

      await relayB.stop();
      await b.close();
      await untilNotSent(() => wake(busA, "2"), () => carrying());
    });
  });

  test("a listener on the channel of any other session counts as another coordinator (one of an older version too) and is named, its own do not", async () => {
    await onFreshDatabase(async ({ open, client }) => {
      const [a, b] = [await open(), await open()];
      const older = client();
      expect(await a.listener!.listening(CHANNEL)).toEqual({ self: false, others: [] });
      const own = await a.listener!.listen(CHANNEL, () => {}, () => {});
      expect(await a.listener!.listening(CHANNEL)).toEqual({ self: true, others: [] });
      const { unlisten } = await older.listen(CHANNEL, () => {});
      const other = await b.listener!.listen(CHANNEL, () => {}, () => {});
      expect((await a.listener!.listening(CHANNEL)).others.sort()).toEqual([b.listener!.name, "postgres.js"].sort());
      await unlisten();
      await older.end();
      await other();
      await vi.waitFor(async () => expect(await a.listener!.listening(CHANNEL)).toEqual({ self: true, others: [] }), { timeout: 5_000 });
      await own();
    });
  });

  test("a replica that says no hello (an earlier version) is found by the next look, and told to look again for what it missed", async () => {
    await onFreshDatabase(async ({ open, start, client }) => {
      const a = await open();
      const older = client();
      const heardByOlder: { events: [string, unknown[]][] }[] = [];
      const busA = new Bus();
      await start(new Relay(busA, a.listener!, () => {}, fail, { checkEveryMs: 200 }));
      // A's hello, not awaited by its start, may reach it too when slow to leave; it carries no events.
      await older.listen(CHANNEL, (payload) => {
        const message = JSON.parse(payload) as (typeof heardByOlder)[number];
        if (message.events.length > 0) heardByOlder.push(message);
      });
      busA.emit("enqueued", [{ id: "41", selector: parseSelector("os=linux"), targetAgent: null }]);
      await vi.waitFor(() => expect(heardByOlder).toHaveLength(1), { timeout: 5_000 });
      // Not the order it missed, but a wake-up for every queue-mode group, which it acts on as it always has.
      expect(heardByOlder[0]!.events).toEqual([["enqueued", [[{ id: "0", selector: null, targetAgent: null }]]]]);
      busA.emit("enqueued", [{ id: "42", selector: parseSelector("os=linux"), targetAgent: null }]);
      await vi.waitFor(() => expect(heardByOlder.flatMap((m) => m.events.map(([, [orders]]) => (orders as { id: string }[])[0]!.id))).toEqual(["0", "42"]), { timeout: 5_000 });
    });
  });

  test("a welcome that could not be sent is sent again by the next look", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const flaky = failingOnce(a.listener!, (messages) => messages.some((m) => m.welcome));
      flaky.state.armed = true;
      const errors: unknown[] = [];
      await start(new Relay(new Bus(), flaky.listener, () => {}, (e) => errors.push(e), { checkEveryMs: 100 }));
      let resyncs = 0;
      await start(new Relay(new Bus(), b.listener!, () => resyncs++, fail, { checkEveryMs: 100 }));
      await vi.waitFor(() => expect(resyncs).toBe(1), { timeout: 5_000 });
      expect(errors.map(String)).toEqual(["Error: connection reset"]);
    });
  });

  test("a coordinator whose listening session is lost, and cannot be had again, looks for work itself at every look until it listens again", async () => {
    await onFreshDatabase(async ({ open, start, client }) => {
      const a = await open();
      let resyncs = 0;
      await start(new Relay(new Bus(), a.listener!, () => resyncs++, fail, { checkEveryMs: 100, deafEveryMs: 100 }));
      // From the suite's own database: one cannot disallow connections to the one it is on.
      const admin = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
      const [row] = await client()<{ name: string }[]>`SELECT current_database() AS name`;
      const { name } = row!;
      // No new session on the database, as when the server is at its connection limit: postgres-js redials in vain.
      await admin.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
      try {
        const ended = await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = ${a.listener!.name} AND query = ${`listen "${CHANNEL}"`}`;
        expect(ended).toHaveLength(1);
        await vi.waitFor(() => expect(resyncs).toBeGreaterThanOrEqual(3), { timeout: 5_000 });
      } finally {
        await admin.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
        await admin.end();
      }
      // postgres-js's own redial gets there in the end; then it no longer looks for itself.
      await vi.waitFor(async () => expect(await a.listener!.listening(CHANNEL)).toEqual({ self: true, others: [] }), { timeout: 30_000 });
      await vi.waitFor(
        async () => {
          const before = resyncs;
          await new Promise((r) => setTimeout(r, 500));
          expect(resyncs).toBe(before);
        },
        { timeout: 5_000 },
      );
    });
  });

  test("after a look that fails (the server down, perhaps its listening session with it), looks come often until one finds it listening", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const a = await open();
      let [looks, down] = [0, false];
      const errors: unknown[] = [];
      const flaky: Listener = {
        ...a.listener!,
        listening: async (channel) => {
          looks++;
          if (down) throw new Error("connection refused");
          return a.listener!.listening(channel);
        },
      };
      await start(new Relay(new Bus(), flaky, () => {}, (e) => errors.push(e), { checkEveryMs: 500, deafEveryMs: 20 }));
      down = true;
      await vi.waitFor(() => expect(errors.map(String)).toContain("Error: connection refused"), { timeout: 5_000 });
      const lookedBefore = looks;
      await new Promise((r) => setTimeout(r, 400));
      // At the usual pace, one look at most.
      expect(looks - lookedBefore).toBeGreaterThanOrEqual(5);
      down = false;
      await vi.waitFor(
        async () => {
          const before = looks;
          await new Promise((r) => setTimeout(r, 400));
          expect(looks - before).toBeLessThanOrEqual(1);
        },
        { timeout: 5_000 },
      );
    });
  });

  test("a stop waits for a look under way, so it does not outlive the database", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const a = await open();
      let looks = 0;
      const slow: Listener = {
        ...a.listener!,
        listening: async (channel) => {
          looks++;
          await new Promise((r) => setTimeout(r, 200));
          return a.listener!.listening(channel);
        },
      };
      const relay = await start(new Relay(new Bus(), slow, () => {}, fail, { checkEveryMs: 50 }));
      await vi.waitFor(() => expect(looks).toBeGreaterThan(1), { timeout: 5_000 });
      await relay.stop();
      await a.close();
      await new Promise((r) => setTimeout(r, 300));
    });
  });
  test("a change is relayed only to a coordinator that watches its work order; its first watcher there is answered with one at once", async () => {
    await withRelays(async (busA, busB) => {
      const seen: string[] = [];
      busB.on("changed", (id) => seen.push(id));
      const { enqueued } = heard(busB);
      // A wake-up sent after a change arrives after it, had the change been sent.
      const settled = async (mark: string) => {
        wake(busA, mark);
        await vi.waitFor(() => expect(enqueued).toContain(mark), { timeout: 5_000 });
      };
      busA.emit("changed", "1");
      await settled("m1");
      expect(seen).toEqual([]);

      const unwatch = busB.watch("1", () => {});
      await vi.waitFor(() => expect(seen).toEqual(["1"]), { timeout: 5_000 });
      busA.emit("changed", "1");
      busA.emit("changed", "2");
      await settled("m2");
      expect(seen).toEqual(["1", "1"]);

      unwatch();
      await vi.waitFor(
        async () => {
          const before = seen.length;
          busA.emit("changed", "1");
          await settled(`m3-${before}`);
          expect(seen).toHaveLength(before);
        },
        { timeout: 5_000 },
      );
    });
  });

  test("what a coordinator watches reaches one that joins later, both ways, and each is answered", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const [busA, busB] = [new Bus(), new Bus()];
      const [seenA, seenB] = [[] as string[], [] as string[]];
      busA.on("changed", (id) => seenA.push(id));
      busB.on("changed", (id) => seenB.push(id));
      busB.watch("3", () => {});
      await start(new Relay(busB, b.listener!, () => {}, fail, { checkEveryMs: 100 }));
      busA.watch("4", () => {});
      await start(new Relay(busA, a.listener!, () => {}, fail, { checkEveryMs: 100 }));
      // Answered once for each time it was said: B says it in its welcome and again in answer to A's hello.
      await vi.waitFor(() => expect([seenA[0], seenB[0]]).toEqual(["4", "3"]), { timeout: 5_000 });
      await new Promise((r) => setTimeout(r, 200));
      expect(seenA.every((id) => id === "4") && seenB.every((id) => id === "3")).toBe(true);
      // Each hears the other's change besides its own.
      const count = (seen: string[], id: string) => seen.filter((s) => s === id).length;
      const [a0, b0] = [count(seenA, "4"), count(seenB, "3")];
      busA.emit("changed", "3");
      busB.emit("changed", "4");
      await vi.waitFor(() => expect([count(seenA, "4") - a0, count(seenB, "3") - b0]).toEqual([1, 1]), { timeout: 5_000 });
    });
  });

  test("every change goes to a listener that has not said what it watches (an earlier version), and to all once one speaks", async () => {
    await onFreshDatabase(async ({ open, start, client }) => {
      const [a, b] = [await open(), await open()];
      const older = client();
      const heardByOlder: string[] = [];
      await older.listen(CHANNEL, (payload) => heardByOlder.push(...JSON.parse(payload).events.flatMap(([name, [id]]: [string, [string]]) => (name === "changed" ? [id] : []))));
      const busA = new Bus();
      await start(new Relay(busA, a.listener!, () => {}, fail, { checkEveryMs: 100 }));
      busA.emit("changed", "5");
      await vi.waitFor(() => expect(heardByOlder).toEqual(["5"]), { timeout: 5_000 });
      await older.end();

      // With only coordinators of this version left, A stops sending changes nobody watches...
      const busB = new Bus();
      const seenB: string[] = [];
      busB.on("changed", (id) => seenB.push(id));
      await start(new Relay(busB, b.listener!, () => {}, fail, { checkEveryMs: 100 }));
      await untilNotSent(() => busA.emit("changed", "6"), () => seenB.length);
      // ...until a notification without a watch list says an earlier version is there.
      // It listens too, as a replica does, so the next look still finds it there.
      const later = client();
      await later.listen(CHANNEL, () => {});
      await later.notify(CHANNEL, JSON.stringify({ from: "older", events: [] }));
      await vi.waitFor(
        async () => {
          busA.emit("changed", "7");
          await new Promise((r) => setTimeout(r, 50));
          expect(seenB).toContain("7");
        },
        { timeout: 5_000 },
      );
    });
  });

  test("what a coordinator that went away watched is forgotten by the next look; one that stays is kept", async () => {
    await onFreshDatabase(async ({ open, start, client }) => {
      const a = await open();
      const payloads: string[] = [];
      const counted: Listener = { ...a.listener!, notify: (channel, sent) => (payloads.push(...sent), a.listener!.notify(channel, sent)) };
      const carrying = (id: string) => payloads.filter((p) => JSON.stringify(JSON.parse(p).events).includes(`["changed",["${id}"]]`)).length;
      const busA = new Bus();
      await start(new Relay(busA, counted, () => {}, fail, { checkEveryMs: 100 }));
      // Two peers that listen under their own names and say what they watch, as this version does.
      const [ghost, stays] = [client("ghost"), client("stays")];
      for (const peer of [ghost, stays]) await peer.listen(CHANNEL, () => {});
      await ghost.notify(CHANNEL, JSON.stringify({ from: "ghost", events: [], watch: ["9"], reset: true }));
      await stays.notify(CHANNEL, JSON.stringify({ from: "stays", events: [], watch: ["8"], reset: true }));
      // Each watch is answered.
      await vi.waitFor(() => expect([carrying("9"), carrying("8")]).toEqual([1, 1]), { timeout: 5_000 });
      await ghost.end();
      await untilNotSent(() => busA.emit("changed", "9"), () => carrying("9"));
      await new Promise((r) => setTimeout(r, 300));
      busA.emit("changed", "8");
      await vi.waitFor(() => expect(carrying("8")).toBe(2), { timeout: 5_000 });
    });
  });

  test("a listener that goes away makes the next look ask the dispatcher to look again: it may have died with wake-ups unsent", async () => {
    await onFreshDatabase(async ({ open, start, client }) => {
      const a = await open();
      let resyncs = 0;
      await start(new Relay(new Bus(), a.listener!, () => resyncs++, fail, { checkEveryMs: 100 }));
      const [ghost, unnamed] = [client("ghost"), client("")];
      for (const peer of [ghost, unnamed]) await peer.listen(CHANNEL, () => {});
      // Looks that find them there, and then find them still there, ask for nothing.
      await new Promise((r) => setTimeout(r, 400));
      const before = resyncs;
      await new Promise((r) => setTimeout(r, 300));
      expect(resyncs).toBe(before);
      // One that cannot be named (as any session of another role shows) going says nothing.
      await unnamed.end();
      await new Promise((r) => setTimeout(r, 500));
      expect(resyncs).toBe(before);
      await ghost.end();
      await vi.waitFor(() => expect(resyncs).toBe(before + 1), { timeout: 5_000 });
    });
  });

  test("a bulk enqueue's wake-ups reach the other coordinator as one per notification, not one per order, in order", async () => {
    await withRelays(async (busA, busB) => {
      const deliveries: string[][] = [];
      busB.on("enqueued", (orders) => deliveries.push(orders.map((o) => o.id)));
      const orders = Array.from({ length: 1_000 }, (_, i) => ({ id: String(i + 1), selector: parseSelector("os=linux"), targetAgent: null }));
      busA.emit("enqueued", orders);
      busA.emit("changed", "7");
      busA.emit("enqueued", [{ id: "1001", selector: null, targetAgent: null }]);
      await vi.waitFor(() => expect(deliveries.flat()).toHaveLength(1_001), { timeout: 5_000 });
      expect(deliveries.flat()).toEqual([...orders.map((o) => o.id), "1001"]);
      // 1,000 orders take a few notifications of 8,000 bytes; the change between splits the last one off.
      expect(deliveries.length).toBeLessThan(20);
    });
  });

  test("a relay's notifications leave one statement at a time, in order", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      let inFlight = 0;
      let most = 0;
      const slow: Listener = {
        ...a.listener!,
        notify: async (channel, payloads) => {
          most = Math.max(most, ++inFlight);
          await new Promise((r) => setTimeout(r, 20));
          await a.listener!.notify(channel, payloads);
          inFlight--;
        },
      };
      const busA = new Bus();
      await start(new Relay(busA, slow, () => {}, fail, { checkEveryMs: 100 }));
      const { enqueued } = await joined(start, b, { checkEveryMs: 100 });
      const sent = Array.from({ length: 30 }, (_, i) => String(100 + i));
      for (const id of sent) {
        wake(busA, id);
        await new Promise((r) => setTimeout(r, 2));
      }
      await vi.waitFor(() => expect(enqueued.filter((id) => sent.includes(id))).toEqual(sent), { timeout: 5_000 });
      expect(most).toBe(1);
    });
  });
  test("a peer that says it again while a look runs is not forgotten by that look", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      let hide: string | undefined;
      let looked: () => void = () => {};
      let release: () => void = () => {};
      // A's looks, held at will: one that runs while B's listening connection is down does not see B.
      const held: Listener = {
        ...a.listener!,
        listening: async (channel) => {
          const { self, others } = await a.listener!.listening(channel);
          const names = others.filter((name) => name !== hide);
          if (hide) {
            looked();
            await new Promise<void>((resolve) => (release = resolve));
          }
          return { self, others: names };
        },
      };
      const [busA, busB] = [new Bus(), new Bus()];
      await start(new Relay(busA, held, () => {}, fail, { checkEveryMs: 100 }));
      let welcomed = 0;
      await start(new Relay(busB, b.listener!, () => welcomed++, fail, { checkEveryMs: 100 }));
      await vi.waitFor(() => expect(welcomed).toBe(1), { timeout: 5_000 });
      let woken = 0;
      busB.watch("9", () => woken++);
      await vi.waitFor(() => expect(woken).toBe(1), { timeout: 5_000 });

      hide = b.listener!.name;
      await new Promise<void>((resolve) => (looked = resolve));
      // B's listening connection drops and comes back: it says hello again, with what it watches.
      await b.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND query = $2`, [b.listener!.name, `listen "${CHANNEL}"`]);
      await vi.waitFor(() => expect(woken).toBe(2), { timeout: 10_000 });
      // The look ends without B; the next one is held, so what that look left is what A goes by.
      const first = release;
      await new Promise<void>((resolve) => {
        looked = resolve;
        first();
      });
      busA.emit("changed", "9");
      await vi.waitFor(() => expect(woken).toBe(3), { timeout: 5_000 });
      hide = undefined;
      release();
    });
  });

  test("a peer heard from without its list (it was missed) is sent every change, and asked once a look to say it again", async () => {
    await onFreshDatabase(async ({ open, start, client }) => {
      const a = await open();
      const busA = new Bus();
      await start(new Relay(busA, a.listener!, () => {}, fail, { checkEveryMs: 300 }));
      const heardByPeer: { hello?: true; events: [string, [string]][] }[] = [];
      const listening = async () => {
        const peer = client("peer");
        await peer.listen(CHANNEL, (payload) => heardByPeer.push(JSON.parse(payload)));
        return peer;
      };
      const first = await listening();
      await first.notify(CHANNEL, JSON.stringify({ from: "peer", events: [], reset: true, watch: [] }));
      // Known, and watching nothing: A's changes stay home.
      await untilNotSent(() => busA.emit("changed", "1"), () => heardByPeer.length);
      // Forgotten by a look while it was not listening; then heard again, without a reset.
      await first.end();
      await new Promise((r) => setTimeout(r, 700));
      const again = await listening();
      // Found by A's next look: only a peer that can be named is asked.
      await new Promise((r) => setTimeout(r, 700));
      heardByPeer.length = 0;
      // Three messages, each in a gathering of its own, within one look's interval.
      for (const id of ["5", "4", "3"]) {
        await again.notify(CHANNEL, JSON.stringify({ from: "peer", events: [], watch: [id] }));
        await new Promise((r) => setTimeout(r, 50));
      }
      await vi.waitFor(() => expect(heardByPeer.some((m) => m.hello)).toBe(true), { timeout: 5_000 });
      expect(heardByPeer.filter((m) => m.hello)).toHaveLength(1);
      const changes = () => heardByPeer.flatMap((m) => m.events.flatMap(([name, [id]]) => (name === "changed" ? [id] : [])));
      busA.emit("changed", "6");
      await vi.waitFor(() => expect(changes()).toContain("6"), { timeout: 5_000 });
      expect(changes()).toContain("5");
    });
  });

  test("what a coordinator watches, if its notification failed, is said again by a later one", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const flaky = failingOnce(b.listener!);
      const errors: unknown[] = [];
      const busA = new Bus();
      await start(new Relay(busA, a.listener!, () => {}, fail, { checkEveryMs: 100 }));
      const busB = new Bus();
      let welcomed = 0;
      await start(new Relay(busB, flaky.listener, () => welcomed++, (e) => errors.push(e), { checkEveryMs: 100 }));
      await vi.waitFor(() => expect(welcomed).toBe(1), { timeout: 5_000 });
      flaky.state.armed = true;
      let woken = 0;
      busB.watch("9", () => woken++);
      await vi.waitFor(() => expect(errors.map(String)).toEqual(["Error: connection reset"]), { timeout: 5_000 });
      // Nothing else to send: the next look sends it all again, and A answers.
      await answeredThenRelayed(busA, "9", () => woken);
    });
  });

  test("what gathers while a notification is on its way goes in one statement after it", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      let gate: Promise<void> | undefined;
      let statements = 0;
      const gated: Listener = {
        ...a.listener!,
        notify: async (channel, payloads) => {
          statements++;
          await gate;
          await a.listener!.notify(channel, payloads);
        },
      };
      const busA = new Bus();
      // Gathering for long, so that the flush under way is done long before the last event's gathering ends.
      await start(new Relay(busA, gated, () => {}, fail, { checkEveryMs: 100, gatherMs: 50 }));
      const { enqueued } = await joined(start, b, { checkEveryMs: 100 });
      let open_!: () => void;
      gate = new Promise<void>((resolve) => (open_ = resolve));
      const before = statements;
      const sent = Array.from({ length: 20 }, (_, i) => String(200 + i));
      for (const id of sent) {
        wake(busA, id);
        await new Promise((r) => setTimeout(r, 60));
      }
      // Taken by the flush under way before its own gathering ends: that ending then finds nothing.
      wake(busA, "last");
      open_();
      await vi.waitFor(() => expect(enqueued.filter((id) => sent.includes(id) || id === "last")).toEqual([...sent, "last"]), { timeout: 5_000 });
      expect(statements - before).toBe(2);
      await new Promise((r) => setTimeout(r, 100));
      wake(busA, "after");
      await vi.waitFor(() => expect(enqueued).toContain("after"), { timeout: 5_000 });
    });
  });

  test("a hello heard while stopping sends nothing after the stop", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const errors: unknown[] = [];
      // It goes on hearing for a while after its stop begins, as while an UNLISTEN is on its way.
      const slow: Listener = {
        ...a.listener!,
        listen: async (channel, onPayload, onListen) => {
          const unlisten = await a.listener!.listen(channel, onPayload, onListen);
          return async () => {
            await new Promise((r) => setTimeout(r, 200));
            await unlisten();
          };
        },
      };
      const busA = new Bus();
      // Gathering for longer than the stop takes: a flush its hello asked for would come after it.
      const relayA = await start(new Relay(busA, slow, () => {}, (e) => errors.push(e), { gatherMs: 300 }));
      await joined(start, b);
      const stopping = relayA.stop();
      await new Promise((r) => setTimeout(r, 50));
      await b.listener!.notify(CHANNEL, [JSON.stringify({ from: b.listener!.name, events: [], hello: true, reset: true, watch: [] })]);
      await stopping;
      await a.close();
      await new Promise((r) => setTimeout(r, 500));
      expect(errors).toEqual([]);
    });
  });
  test("replicas that cannot be named (one application_name for all) get every change, and no one asks them again and again", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const hellos = { a: 0, b: 0 };
      // As when the URL sets application_name: every listener is seen under the same name.
      const shared = (db: Database, side: "a" | "b"): Listener => ({
        ...db.listener!,
        listening: async (channel) => {
          const { self, others } = await db.listener!.listening(channel);
          return { self, others: others.map(() => "shared") };
        },
        notify: (channel, payloads) => {
          hellos[side] += payloads.filter((p) => JSON.parse(p).hello).length;
          return db.listener!.notify(channel, payloads);
        },
      });
      const [busA, busB] = [new Bus(), new Bus()];
      await start(new Relay(busA, shared(a, "a"), () => {}, fail, { checkEveryMs: 100 }));
      await start(new Relay(busB, shared(b, "b"), () => {}, fail, { checkEveryMs: 100 }));
      let woken = 0;
      busB.watch("9", () => woken++);
      busA.watch("8", () => {});
      for (let i = 0; i < 50; i++) {
        wake(busA, String(i));
        wake(busB, String(i));
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(hellos).toEqual({ a: 1, b: 1 });
      const before = woken;
      busA.emit("changed", "7");
      busA.emit("changed", "9");
      await vi.waitFor(() => expect(woken).toBe(before + 1), { timeout: 5_000 });
    });
  });

  test("a hello that could not be sent is sent again, so a list missed meanwhile is said again", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      let deaf = false;
      let relisten: () => void = () => {};
      const errors: unknown[] = [];
      const failing = failingOnce(a.listener!, (messages) => messages.some((m) => m.hello));
      const flaky: Listener = {
        ...failing.listener,
        listen: (channel, onPayload, onListen) => {
          relisten = onListen;
          return a.listener!.listen(channel, (payload) => deaf || onPayload(payload), onListen);
        },
      };
      const busA = new Bus();
      await start(new Relay(busA, flaky, () => {}, (e) => errors.push(e), { checkEveryMs: 100 }));
      const busB = new Bus();
      let welcomed = 0;
      await start(new Relay(busB, b.listener!, () => welcomed++, fail, { checkEveryMs: 100 }));
      await vi.waitFor(() => expect(welcomed).toBe(1), { timeout: 5_000 });
      // A's listening connection is down while B begins watching 9; when it is back, A's hello fails.
      deaf = true;
      let woken = 0;
      busB.watch("9", () => woken++);
      await new Promise((r) => setTimeout(r, 100));
      deaf = false;
      failing.state.armed = true;
      relisten();
      await answeredThenRelayed(busA, "9", () => woken);
      expect(errors.map(String)).toEqual(["Error: connection reset"]);
    });
  });

  test("a change that could not be sent, such as the answer to a watch, is sent again", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const flaky = failingOnce(a.listener!, (messages) => messages.some((m) => m.events.some(([name]) => name === "changed")));
      await start(new Relay(new Bus(), flaky.listener, () => {}, () => {}));
      const busB = new Bus();
      let welcomed = 0;
      await start(new Relay(busB, b.listener!, () => welcomed++, fail));
      await vi.waitFor(() => expect(welcomed).toBe(1), { timeout: 5_000 });
      flaky.state.armed = true;
      let woken = 0;
      busB.watch("9", () => woken++);
      await vi.waitFor(() => expect(woken).toBe(1), { timeout: 5_000 });
      expect(flaky.state.armed).toBe(false);
    });
  });

  test("a wake-up that could not be sent is sent again", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const flaky = failingOnce(a.listener!, (messages) => messages.some((m) => m.events.some(([name]) => name === "enqueued")));
      const busA = new Bus();
      await start(new Relay(busA, flaky.listener, () => {}, () => {}));
      const { enqueued } = await joined(start, b);
      flaky.state.armed = true;
      busA.emit("enqueued", [{ id: "7", selector: parseSelector("os=linux"), targetAgent: "runner-7" }]);
      await vi.waitFor(() => expect(enqueued).toContain("7"), { timeout: 5_000 });
      expect(flaky.state.armed).toBe(false);
    });
  });

  test("what gathers while a notification fails is sent after it, without waiting for more", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const flaky = failingOnce(a.listener!, () => true, 50);
      const busA = new Bus();
      await start(new Relay(busA, flaky.listener, () => {}, () => {}));
      const { enqueued } = await joined(start, b);
      flaky.state.armed = true;
      wake(busA, "failed");
      await new Promise((r) => setTimeout(r, 20));
      wake(busA, "gathered");
      await vi.waitFor(() => expect(enqueued).toContain("gathered"), { timeout: 5_000 });
    });
  });

  test("a notification that fails during the stop is not sent again after it", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      const flaky = failingOnce(a.listener!);
      const errors: unknown[] = [];
      const busA = new Bus();
      const relayA = await start(new Relay(busA, flaky.listener, () => {}, (e) => errors.push(e)));
      await joined(start, b);
      wake(busA, "1");
      flaky.state.armed = true;
      await relayA.stop();
      await a.close();
      await new Promise((r) => setTimeout(r, 1_500));
      expect(errors.map(String)).toEqual(["Error: connection reset"]);
    });
  });

  test("a replica whose listening connection came back goes on looking while its notifications flow", async () => {
    await onFreshDatabase(async ({ open, start }) => {
      const [a, b] = [await open(), await open()];
      let looks = 0;
      let relisten: () => void = () => {};
      const busy: Listener = {
        ...a.listener!,
        listen: (channel, onPayload, onListen) => {
          relisten = onListen;
          return a.listener!.listen(channel, onPayload, onListen);
        },
        notify: async (channel, payloads) => {
          await new Promise((r) => setTimeout(r, 3));
          await a.listener!.notify(channel, payloads);
        },
        listening: (channel) => (looks++, a.listener!.listening(channel)),
      };
      const busA = new Bus();
      await start(new Relay(busA, busy, () => {}, fail, { checkEveryMs: 100 }));
      await start(new Relay(new Bus(), b.listener!, () => {}, fail, { checkEveryMs: 100 }));
      relisten();
      const before = looks;
      // A wake-up every millisecond: there is always more to send than one notification takes.
      for (let i = 0; i < 500; i++) {
        wake(busA, String(i));
        await new Promise((r) => setTimeout(r, 1));
      }
      expect(looks - before).toBeGreaterThan(1);
    });
  });
});
