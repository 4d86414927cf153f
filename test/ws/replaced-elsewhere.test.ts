// One name, two replicas: a newer connection under the name on another coordinator replaces the
// older one there (4002), as on one coordinator, once its own coordinator has renewed it. A
// registration that landed after its socket closed (a hello slow on the database) is never renewed,
// so it costs the live connection neither its name nor its lease.
import { pino } from "pino";
import { afterAll, beforeAll, expect, test } from "vitest";
import WebSocket from "ws";
import { tokenCreate } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { agentConnect } from "../../coordinator/sql/agent-session.ts";
import { PROTOCOL_VERSION } from "../../protocol/limits.ts";
import { createPostgresDatabase, describePostgres, dropPostgresDatabase } from "../support/databases.ts";

describePostgres("one name on two replicas", () => {
  let url: URL;
  let one: Coordinator;
  let two: Coordinator;
  /** A replica that renews less often: a change of heartbeat rolled out one replica at a time. */
  let slow: Coordinator;
  let token: string;
  let tokenId: string;

  beforeAll(async () => {
    url = await createPostgresDatabase();
    const options = { database: { kind: "postgres" as const, url: url.toString() }, port: 0, logger: pino({ level: "silent" }), heartbeatSeconds: 4, leaseSeconds: 12 };
    [one, two, slow] = await Promise.all([startCoordinator(options), startCoordinator(options), startCoordinator({ ...options, heartbeatSeconds: 20, leaseSeconds: 40 })]);
    ({ token, view: { id: tokenId } } = await tokenCreate(one.db, "agents", "agent"));
  });

  afterAll(async () => {
    await Promise.all([one?.stop(), two?.stop(), slow?.stop()]);
    if (url) await dropPostgresDatabase(url);
  });

  /** A raw agent that beats every 300 ms; `closed` is the coordinator's close code. */
  async function welcomed(on: Coordinator, name: string) {
    const socket = new WebSocket(on.agentUrl);
    const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
    await new Promise((resolve) => socket.once("open", resolve));
    const welcome = new Promise((resolve) => socket.once("message", resolve));
    socket.send(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, token, name, labels: {}, capacity: 1, version: "test" }));
    await welcome;
    const beat = setInterval(() => socket.readyState === WebSocket.OPEN && socket.pong(), 300);
    void closed.then(() => clearInterval(beat));
    return { socket, closed };
  }

  const row = async (name: string) =>
    (await one.db.query<{ session_id: string | null; lease: boolean }>(`SELECT session_id, lease_expires_at > now() AS lease FROM agents WHERE name = $1`, [name]))[0]!;

  // First, while the slow replica's first renewal (10 s after its start) is further off than the
  // others' 6 s (a heartbeat and a half of 4 s).
  test("the newer connection is kept on a replica that renews less often than the older one's", async () => {
    const older = await welcomed(one, "unhurried");
    const newer = await welcomed(slow, "unhurried");
    const first = await Promise.race([
      older.closed.then((code) => ({ older: code })),
      newer.closed.then((code) => ({ newer: code })),
      new Promise((resolve) => setTimeout(() => resolve("neither"), 15_000)),
    ]);
    expect(first).toEqual({ older: 4002 });
    expect(newer.socket.readyState).toBe(WebSocket.OPEN);
    newer.socket.close();
  });

  test("the older connection, on the other replica, is closed with 4002 once the newer one is renewed", async () => {
    const older = await welcomed(one, "doubled");
    const newer = await welcomed(two, "doubled");
    const replaced = await Promise.race([older.closed, new Promise((resolve) => setTimeout(() => resolve("still open"), 8_000))]);
    expect(replaced).toBe(4002);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(newer.socket.readyState).toBe(WebSocket.OPEN);
    newer.socket.close();
  });

  test("a registration that landed after its socket closed takes neither the name nor the lease from the live connection", async () => {
    const live = await welcomed(two, "survivor");
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const { session_id: liveSession } = await row("survivor");
    // As a coordinator with a heartbeat of 2 s registers: due to be renewed within 3 s.
    await agentConnect(one.db, { name: "survivor", labels: {}, capacity: 1, mode: "queue", version: "test", tokenId }, "gone-replica-1", 12, 3);
    expect((await row("survivor")).session_id).toBe("gone-replica-1");
    // Its renewal due and not come, the live one's renewal takes the name back once its own
    // coordinator's heartbeat and a half (6 s) has passed since the registration too.
    await new Promise((resolve) => setTimeout(resolve, 9_000));
    expect(await Promise.race([live.closed, "open"])).toBe("open");
    expect(await row("survivor")).toEqual({ session_id: liveSession, lease: true });
    live.socket.close();
  });
});
