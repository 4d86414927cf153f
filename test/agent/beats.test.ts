// The agent's heartbeat on the wire: an idle agent beats every other beat of a busy one, sending
// unsolicited pongs (one-way beats) and asking for an answer with a ping every second beat; an
// agent with jobs running pings every beat; a ping left unanswered until the next one cuts the
// socket, before the welcome as after it.
import { afterEach, expect, test, vi } from "vitest";
import { type AddressInfo, WebSocketServer } from "ws";
import { Connection, IDLE_PINGS } from "../../agent/connection.ts";

const BEAT_MS = 30;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A server that records the control frames each agent sends; `answer: false` leaves pings unanswered. */
async function server(answer: boolean) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", autoPong: answer });
  await new Promise((resolve) => wss.once("listening", resolve));
  cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
  const frames: ("ping" | "pong" | "message")[] = [];
  const closed = new Promise<void>((resolve) =>
    wss.on("connection", (socket) => {
      socket.on("ping", () => frames.push("ping"));
      socket.on("pong", () => frames.push("pong"));
      socket.on("message", () => frames.push("message"));
      socket.on("close", () => resolve());
    }),
  );
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, frames, closed };
}

function connect(url: string, busy: () => boolean): Promise<Connection> {
  return new Promise((resolve) => {
    const connection: Connection = new Connection([url], {
      open: () => {
        connection.established(BEAT_MS, busy);
        resolve(connection);
      },
      message: () => {},
      close: () => {},
      drained: () => {},
      warn: () => {},
    });
    connection.start();
    cleanups.push(() => connection.stop());
  });
}

const until = async (check: () => boolean) => {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
};

test("idle, one-way beats and a ping every IDLE_PINGS beats; busy, a ping every beat", { timeout: 10_000 }, async () => {
  const { url, frames } = await server(true);
  let busy = false;
  await connect(url, () => busy);
  await until(() => frames.length >= 3 * IDLE_PINGS);
  busy = true;
  const idle = frames.slice(0, 3 * IDLE_PINGS);
  const mark = frames.length;
  await until(() => frames.length >= mark + 4);
  expect(idle).toEqual(Array.from({ length: 3 }, () => [...Array(IDLE_PINGS - 1).fill("pong"), "ping"]).flat());
  expect(frames.slice(mark + 1, mark + 4)).toEqual(["ping", "ping", "ping"]);
});

test("idle, a beat every other beat of a busy agent's", { timeout: 10_000 }, async () => {
  const { url, frames } = await server(true);
  vi.useFakeTimers({ toFake: ["setInterval"] });
  cleanups.push(() => void vi.useRealTimers());
  const connection = await connect(url, () => false);
  const sent = async (ticks: number) => {
    const before = frames.length;
    // A tick at a time, each ping's answer in before the next beat.
    for (let tick = 0; tick < ticks; tick++) {
      vi.advanceTimersByTime(BEAT_MS);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // What the beats sent has reached the server once a message sent after them has.
    connection.send({ type: "heartbeat" });
    await until(() => frames.at(-1) === "message");
    frames.pop();
    return frames.length - before;
  };
  expect(await sent(1)).toBe(0);
  expect(await sent(6)).toBe(3);
});

test.each([
  // Idle: the beats, the ping, the beats, then the next ping is due and finds it unanswered.
  ["idle", false, 2 * (IDLE_PINGS - 1)],
  ["busy", true, 0],
])("%s, a ping unanswered by the next one cuts the socket", { timeout: 10_000 }, async (_, busy, pongs) => {
  const { url, frames, closed } = await server(false);
  await connect(url, () => busy);
  await closed;
  expect(frames.filter((f) => f === "ping")).toHaveLength(1);
  expect(frames.filter((f) => f === "pong")).toHaveLength(pongs);
});

test("until the welcome every beat is a ping: a coordinator that answers is waited for, one that does not is left for the next", { timeout: 10_000 }, async () => {
  const [answering, frozen, next] = [await server(true), await server(false), await server(true)];
  const dialled = (urls: string[]) => {
    const opened: string[] = [];
    const connection = new Connection(urls, { open: () => opened.push(urls[opened.length % urls.length]!), message: () => {}, close: () => {}, drained: () => {}, warn: () => {} }, BEAT_MS);
    connection.start();
    cleanups.push(() => connection.stop());
    return opened;
  };
  const waited = dialled([answering.url, next.url]);
  const left = dialled([frozen.url, next.url]);
  await frozen.closed;
  await until(() => left.length === 2);
  expect(left).toEqual([frozen.url, next.url]);
  expect(answering.frames.length).toBeGreaterThanOrEqual(2);
  expect(answering.frames.every((frame) => frame === "ping")).toBe(true);
  expect(waited).toEqual([answering.url]);
});
