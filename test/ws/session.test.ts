// The agent WebSocket endpoint, spoken to by a raw client: bad frames get error frames (never a
// crash), hello is authenticated and versioned, and job messages apply once, in sequence.
import { connect } from "node:net";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import WebSocket from "ws";
import { Agent } from "../../agent/agent.ts";
import { tokenCreate, tokenRevoke } from "../../coordinator/auth/tokens.ts";
import { type Coordinator, startCoordinator } from "../../coordinator/coordinator.ts";
import { MAX_HELLO_BYTES } from "../../coordinator/ws/session.ts";
import { MAX_MESSAGE_BYTES, MAX_MESSAGE_PIECES, PROTOCOL_VERSION } from "../../protocol/limits.ts";
import type { CoordinatorMessage } from "../../protocol/messages.ts";
import { until } from "../support/until.ts";

let coordinator: Coordinator;
let agentToken: string;
let ciToken: string;

beforeAll(async () => {
  coordinator = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger: pino({ level: "silent" }) });
  agentToken = (await tokenCreate(coordinator.db, "agents", "agent")).token;
  ciToken = (await tokenCreate(coordinator.db, "ci", "ci")).token;
});

afterAll(async () => coordinator?.stop());

class Peer {
  readonly socket: WebSocket;
  private readonly inbox: CoordinatorMessage[] = [];
  private waiter?: () => void;
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(private readonly at = { url: coordinator.agentUrl, token: agentToken }) {
    this.socket = new WebSocket(at.url);
    this.socket.on("message", (data) => {
      this.inbox.push(JSON.parse(data.toString()));
      this.waiter?.();
    });
    this.closed = new Promise((resolve) => this.socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  async open(): Promise<this> {
    if (this.socket.readyState !== WebSocket.OPEN) await new Promise((resolve) => this.socket.once("open", resolve));
    return this;
  }

  send(message: unknown): void {
    this.socket.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  /** How many messages of this type have arrived and not been taken. */
  waiting(type: CoordinatorMessage["type"]): number {
    return this.inbox.filter((m) => m.type === type).length;
  }

  /** The next message of this type, skipping others. */
  async next<T extends CoordinatorMessage["type"]>(type: T): Promise<Extract<CoordinatorMessage, { type: T }>> {
    for (;;) {
      const index = this.inbox.findIndex((m) => m.type === type);
      if (index !== -1) return this.inbox.splice(index, 1)[0] as Extract<CoordinatorMessage, { type: T }>;
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
  }

  async hello(name: string, extra: Record<string, unknown> = {}) {
    await this.open();
    this.send({ type: "hello", protocol: PROTOCOL_VERSION, token: this.at.token, name, labels: { os: "linux" }, capacity: 2, version: "test", ...extra });
  }
}

/** An upgrade request for `target`, with `headers` (each ending in CRLF) besides the upgrade's own. */
const upgradeRequest = (target: string, headers = "") => `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${headers}\r\n`;

/** What the coordinator answers a raw upgrade request for `target`. */
function rawUpgrade(target: string, url = coordinator.agentUrl): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), "127.0.0.1", () => socket.write(upgradeRequest(target)));
    let answer = "";
    socket.setEncoding("utf8").on("data", (text: string) => (answer += text));
    socket.on("end", () => resolve(answer));
    socket.on("error", reject);
  });
}

/**
 * A client that upgrades on a raw socket, keeps what it is sent, and answers nothing: not a close,
 * not the end of the stream. `gone` once its socket failed or closed.
 */
async function deafClient(url: string) {
  const { port } = new URL(url);
  let text = "";
  const client = { socket: connect({ port: Number(port), host: "127.0.0.1", allowHalfOpen: true }), gone: false, received: () => text };
  client.socket.on("data", (data: Buffer) => (text += data.toString("latin1")));
  client.socket.on("error", () => (client.gone = true));
  client.socket.on("close", () => (client.gone = true));
  await new Promise((resolve) => client.socket.once("connect", resolve));
  client.socket.write(upgradeRequest("/v1/agent", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"));
  return client;
}

/** `text` as a client's WebSocket text frame (masked with a zero key, which leaves it as it is). */
function textFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  if (payload.length >= 65_536) throw new RangeError("a short frame only");
  const length = payload.length < 126 ? Buffer.from([0x80 | payload.length]) : Buffer.from([0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([Buffer.from([0x81]), length, Buffer.alloc(4), payload]);
}

describe("the upgrade", () => {
  test("a request target that is no URL gets a 400, and the coordinator goes on serving", async () => {
    for (const target of ["http://", "//a:99999/"]) expect(await rawUpgrade(target)).toMatch(/^HTTP\/1.1 400 Bad Request/);
    expect(await rawUpgrade("/v2/elsewhere")).toMatch(/^HTTP\/1.1 404 Not Found/);
    expect((await fetch(`${coordinator.url}/healthz`)).status).toBe(200);
  });
});

describe("sockets before their hello", () => {
  const MAX = 2;
  let small: Coordinator;
  let at: { url: string; token: string };

  beforeAll(async () => {
    small = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, logger: pino({ level: "silent" }), maxAwaitingHello: MAX });
    at = { url: small.agentUrl, token: (await tokenCreate(small.db, "agents", "agent")).token };
  });
  afterAll(async () => small?.stop());

  /** The status an upgrade is answered with, and its `Retry-After`; a socket let in is closed again. */
  function dial(): Promise<{ status: number; retryAfter?: string }> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(at.url);
      socket.on("open", () => (socket.close(), resolve({ status: 101 })));
      socket.on("unexpected-response", (_, response) => {
        resolve({ status: response.statusCode!, retryAfter: response.headers["retry-after"] });
        socket.terminate();
      });
      socket.on("error", (error) => !/Unexpected server response/.test(error.message) && reject(error));
    });
  }

  /** A peer let in, once a place is free: a socket closed a moment ago may not have given its place back yet. */
  async function admittedPeer(): Promise<Peer> {
    for (;;) {
      const peer = new Peer(at);
      const opened = await new Promise<boolean>((resolve) => {
        peer.socket.once("open", () => resolve(true));
        peer.socket.once("unexpected-response", () => resolve(false));
      });
      if (opened) return peer;
      peer.socket.on("error", () => {}).terminate();
      await sleep(20);
    }
  }

  async function closed(peer: Peer): Promise<void> {
    peer.socket.close();
    await peer.closed;
  }

  test("one address holds only so many; the next is answered 503 until one of them says hello or goes", async () => {
    const [first, second] = await Promise.all([admittedPeer(), admittedPeer()]);
    expect(await dial()).toEqual({ status: 503, retryAfter: "1" });
    await first.hello("says-hello");
    await first.next("welcome");
    const third = await admittedPeer();
    expect((await dial()).status).toBe(503);
    await closed(second);
    await until(async () => (await dial()).status === 101, "a slot given back by a socket that closed");
    await closed(third);
    await closed(first);
  });

  test("a hello whose token is refused keeps its place until its socket is gone", async () => {
    const deaf = await Promise.all(Array.from({ length: MAX }, () => deafClient(at.url)));
    const hello = { type: "hello", protocol: PROTOCOL_VERSION, token: `jft_1_${"a".repeat(43)}`, name: "no-token", labels: {}, capacity: 1, version: "test" };
    for (const client of deaf) client.socket.write(textFrame(JSON.stringify(hello)));
    await until(() => deaf.every((client) => client.received().includes("unauthenticated")), "the hellos refused");
    expect((await dial()).status).toBe(503);
    await until(async () => (await dial()).status === 101, "the places given back once the refused sockets were cut");
    for (const client of deaf) client.socket.destroy();
  });

  test("a refused upgrade's socket is dropped, though its client never closes it", async () => {
    const held = await Promise.all(Array.from({ length: MAX }, admittedPeer));
    const refused = await deafClient(at.url);
    await until(() => refused.received().startsWith("HTTP/1.1 503"), "the upgrade refused");
    // Written to a socket the coordinator dropped, a byte is answered with a reset.
    await until(() => (refused.socket.write("x"), refused.gone), "the refused socket dropped");
    for (const peer of held) await closed(peer);
  });

  test("an upgrade whose handshake fails gives its slot back", async () => {
    // No Sec-WebSocket-Key: ws answers 400 and drops the socket.
    for (let i = 0; i < MAX + 1; i++) expect(await rawUpgrade("/v1/agent", at.url)).toMatch(/^HTTP\/1.1 400/);
    const peers = await Promise.all(Array.from({ length: MAX }, admittedPeer));
    for (const peer of peers) await closed(peer);
  });

  test("an agent refused at its upgrade dials again, and gets in once a slot is free", async () => {
    const silent = await Promise.all(Array.from({ length: MAX }, admittedPeer));
    const said: { msg: string; error?: string }[] = [];
    const lines = new Writable({
      write(chunk, _encoding, done) {
        said.push(JSON.parse(String(chunk)));
        done();
      },
    });
    const logger = pino({ level: "info" }, lines);
    const agent = new Agent({ urls: [at.url], token: at.token, name: "refused-first", labels: {}, capacity: 1, mode: "queue", version: "test", cancelGraceMs: 100, logger });
    agent.start();
    await until(() => said.some((line) => line.msg === "connection error" && /\b503\b/.test(line.error ?? "")), "the agent's upgrade refused");
    for (const peer of silent) await closed(peer);
    await until(() => said.some((line) => line.msg === "connected"), "the agent welcomed");
    await agent.stop(1_000);
  });
});

async function agentsListed(): Promise<{ name: string; connected: boolean }[]> {
  const response = await fetch(`${coordinator.url}/v1/agents`, { headers: { authorization: `Bearer ${ciToken}` } });
  return ((await response.json()) as { items: { name: string; connected: boolean }[] }).items;
}

async function enqueue(body: Record<string, unknown>, at = { url: coordinator.url, token: ciToken }): Promise<{ id: string }> {
  const response = await fetch(`${at.url}/v1/work-orders`, {
    method: "POST",
    headers: { authorization: `Bearer ${at.token}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return (await response.json()) as { id: string };
}

/** A peer connected as `name`, holding the job of a work order it just claimed. */
async function holding(name: string, pool: string) {
  const peer = new Peer();
  await peer.hello(name, { labels: { pool } });
  await peer.next("welcome");
  const order = await enqueue({ spec: { command: ["true"] }, selector: `pool=${pool}` });
  peer.send({ type: "claim", slots: 1 });
  const { job } = await peer.next("assign");
  return { peer, order, job };
}

async function healthy(): Promise<boolean> {
  return (await fetch(`${coordinator.url}/healthz`)).ok;
}

describe("bad frames", () => {
  test("after a hello, non-JSON, unknown and malformed messages get error frames and the socket stays open", async () => {
    const peer = new Peer();
    await peer.hello("bad-frames");
    await peer.next("welcome");
    peer.send("not json");
    expect(await peer.next("error")).toMatchObject({ code: "invalid_json", fatal: false });
    peer.send({ type: "launch-missiles" });
    expect(await peer.next("error")).toMatchObject({ code: "invalid_message" });
    peer.send({ type: "claim", slots: "two" });
    expect((await peer.next("error")).message).toMatch(/^slots: /);
    peer.socket.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(await peer.next("error")).toMatchObject({ code: "invalid_json" });
    // Counted in pieces before it is parsed: 512 empty arrays and the fields make 1,028.
    peer.send({ type: "heartbeat", pad: Array.from({ length: MAX_MESSAGE_PIECES / 2 }, () => []) });
    expect(await peer.next("error")).toMatchObject({ code: "message_too_large", message: `a message holds more than ${MAX_MESSAGE_PIECES} pieces (keys and values)` });
    peer.send({ type: "heartbeat", pad: Array.from({ length: MAX_MESSAGE_PIECES / 2 - 3 }, () => []) });
    expect((await peer.next("error")).message).toBe("pad: unknown field");
    // A key is the client's to choose: one of 10,000 characters is named cut, not echoed whole.
    peer.send({ type: "heartbeat", [`k${"K".repeat(9_999)}`]: 0 });
    const unknown = await peer.next("error");
    expect(unknown.message).toBe(`k${"K".repeat(62)}…: unknown field`);
    expect(peer.socket.readyState).toBe(WebSocket.OPEN);
    peer.socket.close();
  });

  test.each([
    ["non-JSON", "not json", "invalid_json"],
    ["a message of no known type", { type: "launch-missiles" }, "invalid_message"],
    ["a claim", { type: "claim", slots: 1 }, "no_hello"],
    ["a frame larger than any hello", "x".repeat(MAX_HELLO_BYTES + 1), "hello_too_large"],
    ["a frame of too many pieces", `[${"0,".repeat(MAX_MESSAGE_PIECES)}0]`, "message_too_large"],
  ])("before a hello, %s gets a fatal error and the socket is closed (4000)", async (_, message, code) => {
    const peer = await new Peer().open();
    peer.send(message);
    expect(await peer.next("error")).toMatchObject({ code, fatal: true });
    expect((await peer.closed).code).toBe(4000);
  });

  test.each([
    ["cut short", () => `{"type":"hello","token":"${agentToken}"`, () => `message is not JSON text (at position ${agentToken.length + 26})`],
    ["that begins with the token", () => `${agentToken} hello`, () => "message is not JSON text"],
    ["with a stray comma", () => `{"token":"${agentToken}",}`, () => `message is not JSON text (at position ${agentToken.length + 12})`],
  ])("a hello %s is refused without quoting its text, which holds the token (the refusal is logged)", async (_, text, message) => {
    const peer = await new Peer().open();
    peer.send(text());
    expect(await peer.next("error")).toMatchObject({ code: "invalid_json", message: message() });
    expect((await peer.closed).code).toBe(4000);
  });

  test("a frame over the size limit closes that socket only", async () => {
    const peer = await new Peer().open();
    peer.send("x".repeat(MAX_MESSAGE_BYTES + 1));
    expect((await peer.closed).code).toBe(1009);
    expect(await healthy()).toBe(true);
  });
});

describe("hello", () => {
  test("a bad token is refused with a fatal error and close code 4001", async () => {
    const peer = new Peer();
    await peer.hello("intruder", { token: "jft_1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" });
    expect(await peer.next("error")).toMatchObject({ code: "unauthenticated", fatal: true });
    expect((await peer.closed).code).toBe(4001);
  });

  test("a CI token cannot connect as an agent", async () => {
    const peer = new Peer();
    await peer.hello("ci-pretender", { token: ciToken });
    expect((await peer.closed).code).toBe(4001);
  });

  test("another protocol version is refused with close code 4000", async () => {
    const peer = new Peer();
    await peer.hello("future", { protocol: PROTOCOL_VERSION + 1 });
    expect((await peer.next("error")).message).toMatch(/protocol/);
    expect((await peer.closed).code).toBe(4000);
  });

  test("a second connection under the same name replaces the first", async () => {
    const first = new Peer();
    await first.hello("twin");
    await first.next("welcome");
    const second = new Peer();
    await second.hello("twin");
    await second.next("welcome");
    expect((await first.closed).code).toBe(4002);
    second.socket.close();
  });

  test("a name let in with one token is refused (4005) to another while that one is good, and not taken from it; once it is revoked, the name is free", async () => {
    const owner = await tokenCreate(coordinator.db, "owner", "agent");
    const other = (await tokenCreate(coordinator.db, "other", "agent")).token;
    const first = new Peer({ url: coordinator.agentUrl, token: owner.token });
    await first.hello("owned");
    await first.next("welcome");
    const impostor = new Peer({ url: coordinator.agentUrl, token: other });
    await impostor.hello("owned");
    expect(await impostor.next("error")).toMatchObject({ code: "name_taken", fatal: false });
    expect((await impostor.closed).code).toBe(4005);
    expect(first.socket.readyState).toBe(WebSocket.OPEN);
    first.socket.close();
    await first.closed;
    // Disconnected, the name is still the token's.
    const again = new Peer({ url: coordinator.agentUrl, token: other });
    await again.hello("owned");
    expect((await again.closed).code).toBe(4005);

    expect(await tokenRevoke(coordinator.db, owner.view.id)).toBe(true);
    const heir = new Peer({ url: coordinator.agentUrl, token: other });
    await heir.hello("owned");
    await heir.next("welcome");
    heir.socket.close();
  });

  test("a connection that closes while its hello waits on the database leaves its agent disconnected, not registered", async () => {
    let entered!: () => void;
    let release!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    const held = new Promise<void>((resolve) => (release = resolve));
    // PGlite runs one statement at a time: the hello's token check and registration wait for this.
    const holding = coordinator.db.transaction(async () => {
      entered();
      await held;
    });
    await inside;
    const peer = new Peer();
    await peer.hello("gone-during-hello");
    peer.socket.close();
    await peer.closed;
    // The coordinator's side of the socket has closed too, before the hello goes on.
    await new Promise((resolve) => setTimeout(resolve, 200));
    release();
    await holding;
    const connected = async () => ((await agentsListed()).find((a) => a.name === "gone-during-hello")?.connected ?? false);
    await until(async () => !(await connected()), "the agent to be let go");
  });
});

describe("job messages", () => {
  test("apply once each, in sequence: repeats are acknowledged and ignored, gaps refused", async () => {
    const { peer, order, job } = await holding("sequencer", "seq");
    expect(job).toMatchObject({ workOrderId: order.id, attempt: 1, adapter: "exec" });
    const { jobId } = job;

    peer.send({ type: "job.started", jobId, seq: 1 });
    expect(await peer.next("ack")).toEqual({ type: "ack", jobId, seq: 1 });
    peer.send({ type: "job.log", jobId, seq: 2, data: "one\n" });
    expect(await peer.next("ack")).toEqual({ type: "ack", jobId, seq: 2 });
    peer.send({ type: "job.log", jobId, seq: 2, data: "one\n" });
    expect(await peer.next("ack")).toEqual({ type: "ack", jobId, seq: 2 });
    peer.send({ type: "job.log", jobId, seq: 4, data: "three\n" });
    expect(await peer.next("error")).toMatchObject({ code: "sequence_gap", jobId });
    peer.send({ type: "job.log", jobId, seq: 3, data: "two\n" });
    peer.send({ type: "job.finished", jobId, seq: 4, outcome: "succeeded", exitCode: 0 });
    // Acknowledgements are cumulative: both may be answered by one.
    let acked = 0;
    while (acked < 4) acked = (await peer.next("ack")).seq;
    expect(acked).toBe(4);
    peer.send({ type: "job.finished", jobId, seq: 5, outcome: "failed", exitCode: 1 });
    expect(await peer.next("error")).toMatchObject({ code: "illegal_transition", jobId });

    const log = await fetch(`${coordinator.url}/v1/jobs/${jobId}/log`, { headers: { authorization: `Bearer ${ciToken}` } });
    expect(await log.text()).toBe("one\ntwo\n");
    const view = await fetch(`${coordinator.url}/v1/work-orders/${order.id}`, { headers: { authorization: `Bearer ${ciToken}` } });
    expect(await view.json()).toMatchObject({ state: "succeeded", latestJob: { exitCode: 0, state: "succeeded" } });
    peer.socket.close();
  });

  test("the messages of a job answered together are acknowledged once, up to the last", async () => {
    const { peer, job } = await holding("coalescer", "coalesce");
    const { jobId } = job;
    const frames = [
      { type: "job.starting", jobId, seq: 1 },
      { type: "job.started", jobId, seq: 2 },
      { type: "job.log", jobId, seq: 3, data: "done\n" },
      { type: "job.finished", jobId, seq: 4, outcome: "succeeded", exitCode: 0 },
    ];
    // One write, so that the coordinator reads them in one turn and one batch applies them.
    const tcp = (peer.socket as unknown as { _socket: import("node:net").Socket })._socket;
    tcp.cork();
    for (const frame of frames) peer.send(frame);
    tcp.uncork();
    expect(await peer.next("ack")).toEqual({ type: "ack", jobId, seq: 4 });
    peer.send({ type: "job.log", jobId, seq: 5, data: "late\n" });
    expect(await peer.next("error")).toMatchObject({ code: "illegal_transition" });
    expect(await peer.next("ack")).toEqual({ type: "ack", jobId, seq: 5 });
    peer.socket.close();
  });

  test("an agent is given no more than its capacity and prefetch, however much it claims; a finish frees a slot", async () => {
    const peer = new Peer();
    await peer.hello("greedy", { labels: { pool: "greedy" }, capacity: 1, prefetch: 1 });
    await peer.next("welcome");
    const orders = [];
    for (let i = 0; i < 4; i++) orders.push(await enqueue({ spec: { command: ["true"] }, selector: "pool=greedy" }));
    peer.send({ type: "claim", slots: 4 });
    const { job: first } = await peer.next("assign");
    await peer.next("assign");
    peer.send({ type: "claim", slots: 1 });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(peer.waiting("assign")).toBe(0);
    expect((await Promise.all(orders.map((o) => stateOf(o.id)))).filter((state) => state === "pending")).toHaveLength(2);
    // What it claimed beyond its limit is owed, and granted as jobs finish.
    peer.send({ type: "job.finished", jobId: first.jobId, seq: 1, outcome: "succeeded", exitCode: 0 });
    await peer.next("assign");
    peer.socket.close();
  });

  test("a finish that is not applied (out of sequence) gives its job back to the agent's count: sent again and again, such finishes win one job more at most", async () => {
    const peer = new Peer();
    await peer.hello("hoarder", { labels: { pool: "hoard" }, capacity: 1 });
    await peer.next("welcome");
    const orders = [];
    for (let i = 0; i < 5; i++) orders.push(await enqueue({ spec: { command: ["true"] }, selector: "pool=hoard" }));
    peer.send({ type: "claim", slots: 1 });
    const jobs = [(await peer.next("assign")).job];
    for (let round = 0; round < 4; round++) {
      peer.send({ type: "claim", slots: 1 });
      peer.send({ type: "job.finished", jobId: jobs.at(-1)!.jobId, seq: 99, outcome: "succeeded", exitCode: 0 });
      expect(await peer.next("error")).toMatchObject({ code: "sequence_gap" });
      await new Promise((resolve) => setTimeout(resolve, 300));
      while (peer.waiting("assign") > 0) jobs.push((await peer.next("assign")).job);
    }
    expect(jobs.length).toBeLessThanOrEqual(2);
    expect((await Promise.all(orders.map((o) => stateOf(o.id)))).filter((state) => state === "pending")).toHaveLength(5 - jobs.length);
    peer.socket.close();
  });

  test.each([
    ["a repeat of another message's number", "repeat", (jobId: string) => [
      { type: "job.started", jobId, seq: 1 },
      { type: "job.finished", jobId, seq: 1, outcome: "succeeded", exitCode: 0 },
    ]],
    ["an ending the job may not take", "refused", (jobId: string) => [
      { type: "job.starting", jobId, seq: 1 },
      { type: "job.finished", jobId, seq: 2, outcome: "returned", exitCode: null },
    ]],
  ])("finishes whose jobs run on (%s), sent for all its jobs round after round, win one job beyond the limit at most", async (_, pool, messages) => {
    const peer = new Peer();
    await peer.hello(pool, { labels: { pool }, capacity: 1 });
    await peer.next("welcome");
    for (let i = 0; i < 5; i++) await enqueue({ spec: { command: ["true"] }, selector: `pool=${pool}` });
    peer.send({ type: "claim", slots: 1 });
    const jobs = [(await peer.next("assign")).job];
    for (let round = 0; round < 4; round++) {
      // For every job it holds at once, each before the others are answered.
      for (const { jobId } of jobs) for (const message of messages(jobId)) peer.send(message);
      peer.send({ type: "claim", slots: 1 });
      await new Promise((resolve) => setTimeout(resolve, 300));
      while (peer.waiting("assign") > 0) jobs.push((await peer.next("assign")).job);
    }
    expect(jobs.length).toBeLessThanOrEqual(2);
    peer.socket.close();
  });

  test("an agent back with a capacity below the jobs its welcome lists is given no more than it, as it disowns them", async () => {
    const first = new Peer();
    await first.hello("shrinker", { labels: { pool: "shrink" }, capacity: 3 });
    await first.next("welcome");
    for (let i = 0; i < 6; i++) await enqueue({ spec: { command: ["true"] }, selector: "pool=shrink" });
    first.send({ type: "claim", slots: 3 });
    for (let i = 0; i < 3; i++) await first.next("assign");
    first.socket.close();
    await first.closed;
    const second = new Peer();
    await second.hello("shrinker", { labels: { pool: "shrink" }, capacity: 1 });
    const { jobs } = await second.next("welcome");
    expect(jobs).toHaveLength(3);
    // A claim that overtook the job messages: owed, since the three it holds pass its capacity.
    second.send({ type: "claim", slots: 1 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(second.waiting("assign")).toBe(0);
    for (const { jobId, seq } of jobs) second.send({ type: "job.finished", jobId, seq: seq + 1, outcome: "lost", exitCode: null, error: "restarted" });
    await second.next("assign");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(second.waiting("assign")).toBe(0);
    second.socket.close();
  });

  test("a drain read together with a finish grants the owed slots to no one", async () => {
    const peer = new Peer();
    await peer.hello("leaving", { labels: { pool: "leaving" }, capacity: 1 });
    await peer.next("welcome");
    await enqueue({ spec: { command: ["true"] }, selector: "pool=leaving" });
    peer.send({ type: "claim", slots: 2 });
    const { job } = await peer.next("assign");
    // One write: the coordinator reads both in the same turn.
    const tcp = (peer.socket as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
    tcp.cork();
    peer.send({ type: "drain" });
    peer.send({ type: "job.finished", jobId: job.jobId, seq: 1, outcome: "succeeded", exitCode: 0 });
    tcp.uncork();
    await peer.next("ack");
    const later = await enqueue({ spec: { command: ["true"] }, selector: "pool=leaving" });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(peer.waiting("assign")).toBe(0);
    expect(await stateOf(later.id)).toBe("pending");
    peer.socket.close();
  });

  test("a job message for another agent's job is refused", async () => {
    const peer = new Peer();
    await peer.hello("stranger");
    await peer.next("welcome");
    peer.send({ type: "job.started", jobId: "999999", seq: 1 });
    expect(await peer.next("error")).toMatchObject({ code: "unknown_job", jobId: "999999" });
    peer.socket.close();
  });

  test("an agent that reconnects is told the sequence the coordinator holds for its open jobs", async () => {
    const { peer: first, job } = await holding("returner", "return");
    first.send({ type: "job.started", jobId: job.jobId, seq: 1 });
    await first.next("ack");
    first.socket.close();
    await first.closed;
    const second = new Peer();
    await second.hello("returner", { labels: { pool: "return" } });
    expect((await second.next("welcome")).jobs).toEqual([{ jobId: job.jobId, seq: 1 }]);
    second.socket.close();
  });
});

async function stateOf(orderId: string): Promise<string> {
  const response = await fetch(`${coordinator.url}/v1/work-orders/${orderId}`, { headers: { authorization: `Bearer ${ciToken}` } });
  return ((await response.json()) as { state: string }).state;
}

async function eventsOf(orderId: string): Promise<string[]> {
  const response = await fetch(`${coordinator.url}/v1/work-orders/${orderId}`, { headers: { authorization: `Bearer ${ciToken}` } });
  return ((await response.json()) as { events: { to: string }[] }).events.map((e) => e.to);
}

describe("sessions that go while work is dealt", () => {
  test("a replaced connection whose closing never completes is dealt no more work, whatever it claims", async () => {
    const first = new Peer();
    await first.hello("half-open", { labels: { pool: "half-open" }, capacity: 4 });
    await first.next("welcome");
    first.send({ type: "claim", slots: 2 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Gone without a word: it never reads the close frame, so its socket stays closing on our side.
    (first.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    const second = new Peer();
    await second.hello("half-open", { labels: { pool: "half-open" } });
    await second.next("welcome");
    // Frames it sent still arrive while its socket closes: a claim among them puts it back in no group.
    first.send({ type: "claim", slots: 2 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const order = await enqueue({ spec: { command: ["true"] }, selector: "pool=half-open" });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await eventsOf(order.id)).toEqual(["pending"]);
    second.send({ type: "claim", slots: 1 });
    expect((await second.next("assign")).job.workOrderId).toBe(order.id);
    first.socket.terminate();
    second.socket.close();
  });

  test("jobs claimed for a connection that closed meanwhile go back to the queue, their attempt not spent", async () => {
    const order = await enqueue({ spec: { command: ["true"] }, selector: "pool=gone" });
    const first = new Peer();
    await first.hello("gone", { labels: { pool: "gone" } });
    await first.next("welcome");
    // The database is held, so the claim round waits while the socket closes.
    let release!: () => void;
    const held = coordinator.db.transaction(() => new Promise<void>((resolve) => (release = resolve)));
    first.send({ type: "claim", slots: 1 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    first.socket.close();
    await first.closed;
    release();
    await held;
    await until(async () => (await stateOf(order.id)) === "pending", "the work order back in the queue");
    const second = new Peer();
    await second.hello("gone", { labels: { pool: "gone" } });
    expect((await second.next("welcome")).jobs).toEqual([]);
    second.send({ type: "claim", slots: 1 });
    const { job } = await second.next("assign");
    expect([job.workOrderId, job.attempt]).toEqual([order.id, 1]);
    second.socket.close();
  });
});

test("a cancel requested while the agent was away is delivered when it reconnects", async () => {
  const { peer: first, order, job } = await holding("wanderer", "away");
  first.send({ type: "job.started", jobId: job.jobId, seq: 1 });
  await first.next("ack");
  first.socket.close();
  await first.closed;

  const cancel = await fetch(`${coordinator.url}/v1/work-orders/${order.id}/cancel`, {
    method: "POST",
    headers: { authorization: `Bearer ${ciToken}`, "content-type": "application/json" },
    body: JSON.stringify({ reason: "while you were out" }),
  });
  expect(cancel.status).toBe(202);

  const second = new Peer();
  await second.hello("wanderer", { labels: { pool: "away" } });
  await second.next("welcome");
  expect(await second.next("cancel")).toEqual({ type: "cancel", jobId: job.jobId, reason: "while you were out" });
  second.socket.close();
});

/**
 * A coordinator that cuts agents off past `maxBufferedBytes` unread, and an agent `name` welcomed
 * there with `count` orders of a script of `scriptChars` waiting for it.
 */
async function withLargeOrders(
  { maxBufferedBytes, name, count, scriptChars }: { maxBufferedBytes: number; name: string; count: number; scriptChars: number },
  test: (peer: Peer, small: Coordinator) => Promise<void>,
): Promise<void> {
  const small = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, maxAgentBufferedBytes: maxBufferedBytes, logger: pino({ level: "silent" }) });
  try {
    const token = (await tokenCreate(small.db, "agents", "agent")).token;
    const ci = (await tokenCreate(small.db, "ci", "ci")).token;
    const peer = new Peer({ url: small.agentUrl, token });
    await peer.hello(name, { labels: { pool: name }, capacity: count });
    await peer.next("welcome");
    const order = { spec: { script: `true # ${"x".repeat(scriptChars)}` }, selector: `pool=${name}` };
    const bulk = await fetch(`${small.url}/v1/work-orders/bulk`, {
      method: "POST",
      headers: { authorization: `Bearer ${ci}`, "content-type": "application/json" },
      body: JSON.stringify({ workOrders: Array.from({ length: count }, () => order) }),
    });
    expect(bulk.status).toBe(201);
    await test(peer, small);
  } finally {
    await small.stop();
  }
}

test("an agent that stops reading is cut off once more than the limit waits for it, and the coordinator goes on", async () => {
  // 24 MB of assignments: more than the kernel's buffers on loopback take, and far past the limit.
  await withLargeOrders({ maxBufferedBytes: 256 * 1024, name: "deaf", count: 200, scriptChars: 120_000 }, async (peer, small) => {
    peer.socket.pause();
    peer.send({ type: "claim", slots: 200 });
    const connected = async () => (await small.db.query<{ s: string | null }>(`SELECT session_id::text AS s FROM agents WHERE name = 'deaf'`))[0]!.s !== null;
    await until(async () => !(await connected()), "the agent to be cut off");
    expect((await fetch(`${small.url}/healthz`)).status).toBe(200);
    peer.socket.terminate();
  });
});

test("an agent that reads is never cut off, though one claim round's assignments pass the limit by themselves", async () => {
  await withLargeOrders({ maxBufferedBytes: 1024 * 1024, name: "reader", count: 20, scriptChars: 100_000 }, async (peer) => {
    peer.send({ type: "claim", slots: 20 });
    for (let i = 0; i < 20; i++) await peer.next("assign");
    expect(peer.socket.readyState).toBe(WebSocket.OPEN);
    peer.socket.close();
  });
});

test("an upgrade its client resets before the answer leaves no unhandled error", async () => {
  const { port } = new URL(coordinator.agentUrl);
  await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      new Promise<void>((resolve) => {
        const socket = connect(Number(port), "127.0.0.1", () => {
          socket.write(`GET ${i % 2 ? "/elsewhere" : "http://"} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
          socket.resetAndDestroy();
          resolve();
        });
        socket.on("error", () => resolve());
      }),
    ),
  );
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(await healthy()).toBe(true);
});

test("an acknowledgement waits for the next message to the agent, and goes ahead of it", async () => {
  // Long enough that only another message can take the acknowledgement along.
  const patient = await startCoordinator({ database: { kind: "pglite", dataDir: ":memory:" }, port: 0, ackDelayMs: 60_000, logger: pino({ level: "silent" }) });
  try {
    const token = (await tokenCreate(patient.db, "agents", "agent")).token;
    const ci = { url: patient.url, token: (await tokenCreate(patient.db, "ci", "ci")).token };
    const peer = new Peer({ url: patient.agentUrl, token });
    await peer.hello("patient", { labels: { pool: "patient" }, capacity: 1 });
    await peer.next("welcome");
    await enqueue({ spec: { command: ["true"] }, selector: "pool=patient" }, ci);
    peer.send({ type: "claim", slots: 1 });
    const { job } = await peer.next("assign");
    peer.send({ type: "job.finished", jobId: job.jobId, seq: 1, outcome: "succeeded", exitCode: 0 });
    await until(
      async () => (await patient.db.query<{ state: string }>("SELECT state FROM jobs WHERE id = $1", [job.jobId]))[0]!.state === "succeeded",
      "the job to succeed",
    );
    // Applied: an acknowledgement sent now would arrive before the answer to a ping sent later.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await new Promise((resolve) => peer.socket.once("pong", resolve).ping());
    expect(peer.waiting("ack")).toBe(0);

    await enqueue({ spec: { command: ["true"] }, selector: "pool=patient" }, ci);
    peer.send({ type: "claim", slots: 1 });
    await peer.next("assign");
    expect(peer.waiting("ack")).toBe(1);
    expect(await peer.next("ack")).toEqual({ type: "ack", jobId: job.jobId, seq: 1 });
    peer.socket.close();
    await peer.closed;
  } finally {
    await patient.stop();
  }
});

test("after every bad frame above, the coordinator still serves", async () => {
  expect(await healthy()).toBe(true);
});
