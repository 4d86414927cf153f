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
  let token: string;
  let tokenId: string;

  beforeAll(async () => {
    url = await createPostgresDatabase();
    const options = { database: { kind: "postgres" as const, url: url.toString() }, port: 0, logger: pino({ level: "silent" }), heartbeatSeconds: 1, leaseSeconds: 3 };
    [one, two] = await Promise.all([startCoordinator(options), startCoordinator(options)]);
    ({ token, view: { id: tokenId } } = await tokenCreate(one.db, "agents", "agent"));
  });

  afterAll(async () => {
    await Promise.all([one?.stop(), two?.stop()]);
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

  test("the older connection, on the other replica, is closed with 4002 once the newer one is renewed", async () => {
    const older = await welcomed(one, "doubled");
    const newer = await welcomed(two, "doubled");
    const replaced = await Promise.race([older.closed, new Promise((resolve) => setTimeout(() => resolve("still open"), 4_000))]);
    expect(replaced).toBe(4002);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(newer.socket.readyState).toBe(WebSocket.OPEN);
    newer.socket.close();
  });

  test("a registration that landed after its socket closed takes neither the name nor the lease from the live connection", async () => {
    const live = await welcomed(two, "survivor");
    await new Promise((resolve) => setTimeout(resolve, 600));
    const { session_id: liveSession } = await row("survivor");
    await agentConnect(one.db, { name: "survivor", labels: {}, capacity: 1, mode: "queue", version: "test", tokenId }, "gone-replica-1", 3);
    expect((await row("survivor")).session_id).toBe("gone-replica-1");
    // A heartbeat and a half unrenewed, then the live one's next renewal takes the name back.
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(live.socket.readyState).toBe(WebSocket.OPEN);
    expect(await row("survivor")).toEqual({ session_id: liveSession, lease: true });
    live.socket.close();
  });
});
