// An agent's heartbeat is a WebSocket ping or an unsolicited pong: an agent that sends either stays
// connected, and one that goes quiet after its welcome is closed as silent (4003) after three
// intervals. An agent whose lease cannot be renewed (the database stuck) is closed with 1013, beats
// or not, before its fence's assumptions fail.
import { pino } from "pino";
import { afterAll, beforeAll, expect, test, vi } from "vitest";
import WebSocket from "ws";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { PROTOCOL_VERSION } from "../../protocol/limits.ts";
import postgres from "postgres";
import { workOrderCancel } from "../../coordinator/sql/work-order-cancel.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from "../support/databases.ts";
import { order, workOrderInsert } from "../store/fixtures.ts";

let coordinator: Coordinator;
let token: string;

beforeAll(async () => {
  coordinator = await startCoordinator({
    database: { kind: "pglite", dataDir: ":memory:" },
    port: 0,
    heartbeatSeconds: 1,
    leaseSeconds: 2,
    logger: pino({ level: "silent" }),
  });
  token = (await tokenCreate(coordinator.db, "agents", "agent")).token;
});

afterAll(async () => coordinator?.stop());

async function welcomed(name: string, on = coordinator, as = token) {
  const socket = new WebSocket(on.agentUrl);
  const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
  await new Promise((resolve) => socket.once("open", resolve));
  const welcome = new Promise((resolve) => socket.once("message", resolve));
  socket.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, token: as, name, labels: {}, capacity: 1, version: "test" }));
  await welcome;
  return { socket, closed };
}

test("pings or one-way pongs alone keep an agent connected; silence after the welcome closes it with 4003", { timeout: 20_000 }, async () => {
  const pinging = await welcomed("pinging");
  const ponging = await welcomed("ponging");
  const quiet = await welcomed("quiet");
  const beats = setInterval(() => (pinging.socket.ping(), ponging.socket.pong()), 400);
  const code = await quiet.closed;
  expect(code).toBe(4003);
  // Well past three intervals of the quiet one's silence, the beating ones are still open.
  await new Promise((r) => setTimeout(r, 1500));
  expect(pinging.socket.readyState).toBe(WebSocket.OPEN);
  expect(ponging.socket.readyState).toBe(WebSocket.OPEN);
  clearInterval(beats);
  pinging.socket.close();
  ponging.socket.close();
});

test("a cancel whose notification never came is sent again with the next lease renewal", async () => {
  const { row } = await workOrderInsert(coordinator.db, order({ selector: "pool=quiet-cancel" }));
  const socket = new WebSocket(coordinator.agentUrl);
  const inbox: { type: string; jobId?: string; reason?: string }[] = [];
  socket.on("message", (data) => inbox.push(JSON.parse(data.toString())));
  await new Promise((resolve) => socket.once("open", resolve));
  socket.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, token, name: "quiet-cancel", labels: { pool: "quiet-cancel" }, capacity: 1, version: "test" }));
  await vi.waitFor(() => expect(inbox.some((m) => m.type === "welcome")).toBe(true));
  socket.send(JSON.stringify({ type: "claim", slots: 1 }));
  await vi.waitFor(() => expect(inbox.some((m) => m.type === "assign")).toBe(true));
  // Asked in the database alone, as when the notification to this coordinator was lost.
  const outcome = await workOrderCancel(coordinator.db, row.id, "no word of it");
  expect(outcome.kind).toBe("requested");
  const beats = setInterval(() => socket.pong(), 200);
  await vi.waitFor(() => expect(inbox).toContainEqual({ type: "cancel", jobId: (outcome as { jobId: string }).jobId, reason: "no word of it" }), { timeout: 5000 });
  clearInterval(beats);
  socket.close();
});

describePostgres("leases", () => {
  test("an agent whose lease the coordinator cannot renew is closed with 1013, though it beats", { timeout: 20_000 }, async () => {
    const url = await createPostgresDatabase();
    const stuck = await startCoordinator({ database: { kind: "postgres", url: url.toString() }, port: 0, heartbeatSeconds: 1, leaseSeconds: 3, logger: pino({ level: "silent" }) });
    const locker = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      const agent = await welcomed("renewed", stuck, (await tokenCreate(stuck.db, "agents", "agent")).token);
      const beats = setInterval(() => agent.socket.ping(), 200);
      // Renewals go on: a few heartbeats later it is still connected.
      await new Promise((r) => setTimeout(r, 2500));
      expect(agent.socket.readyState).toBe(WebSocket.OPEN);
      // Renewals now wait on a lock, as on a database that stopped answering.
      const release = locker.begin(async (tx) => {
        await tx`LOCK TABLE agents IN ACCESS EXCLUSIVE MODE`;
        expect(await agent.closed).toBe(1013);
      });
      await release;
      clearInterval(beats);
    } finally {
      await stuck.stop();
      await locker.end();
      await dropPostgresDatabase(url);
    }
  });

  test("an agent whose registration waited most of a heartbeat on the database is closed with 1013, not welcomed on that lease", { timeout: 20_000 }, async () => {
    const url = await createPostgresDatabase();
    const stalled = await startCoordinator({ database: { kind: "postgres", url: url.toString() }, port: 0, heartbeatSeconds: 1, leaseSeconds: 3, logger: pino({ level: "silent" }) });
    const locker = postgres(url.toString(), { max: 1, onnotice: () => {} });
    try {
      const agentToken = (await tokenCreate(stalled.db, "agents", "agent")).token;
      let locked!: () => void;
      let unlock!: () => void;
      const isLocked = new Promise<void>((resolve) => (locked = resolve));
      const unlocked = new Promise<void>((resolve) => (unlock = resolve));
      // The registration waits on a lock, as on a database that stalls.
      const holding = locker.begin(async (tx) => {
        await tx`LOCK TABLE agents IN ACCESS EXCLUSIVE MODE`;
        locked();
        await unlocked;
      });
      await isLocked;
      const socket = new WebSocket(stalled.agentUrl);
      const heard: string[] = [];
      socket.on("message", (data) => heard.push((JSON.parse(String(data)) as { type: string }).type));
      const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
      await new Promise((resolve) => socket.once("open", resolve));
      socket.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, token: agentToken, name: "stalled", labels: {}, capacity: 1, version: "test" }));
      await new Promise((r) => setTimeout(r, 1_500));
      unlock();
      await holding;
      expect(await closed).toBe(1013);
      expect(heard).not.toContain("welcome");
    } finally {
      await stalled.stop();
      await locker.end();
      await dropPostgresDatabase(url);
    }
  });
});
