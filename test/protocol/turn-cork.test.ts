// Frames sent in one turn of the event loop leave in one socket write, and all arrive, in order.
import type { Socket } from "node:net";
import { expect, test } from "vitest";
import WebSocket, { WebSocketServer } from "ws";
import { TurnCork } from "../../protocol/turn-cork.ts";

async function pair() {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => server.once("listening", resolve));
  const received: string[] = [];
  server.on("connection", (ws) => ws.on("message", (data) => received.push(data.toString())));
  const client = new WebSocket(`ws://127.0.0.1:${(server.address() as { port: number }).port}`);
  await new Promise((resolve) => client.once("open", resolve));
  // Count the TCP socket's trips to the kernel: one per _write or _writev.
  const tcp = (client as unknown as { _socket: Socket & { _write: Function; _writev: Function } })._socket;
  let writes = 0;
  for (const name of ["_write", "_writev"] as const) {
    const original = tcp[name].bind(tcp);
    tcp[name] = (...args: unknown[]) => (writes++, original(...args));
  }
  const close = async () => {
    client.close();
    await new Promise((resolve) => server.close(resolve));
  };
  return { client, received, writes: () => writes, close };
}

test("three frames sent in one turn through a TurnCork go out in one write and arrive in order", async () => {
  const { client, received, writes, close } = await pair();
  const cork = new TurnCork();
  for (const text of ["one", "two", "three"]) {
    cork.hold(client);
    client.send(text);
  }
  await new Promise((resolve) => setImmediate(resolve));
  expect(writes()).toBe(1);
  await expect.poll(() => received).toEqual(["one", "two", "three"]);
  await close();
});

test("without it, each frame is its own write", async () => {
  const { client, received, writes, close } = await pair();
  for (const text of ["one", "two", "three"]) client.send(text);
  await new Promise((resolve) => setImmediate(resolve));
  expect(writes()).toBe(3);
  await expect.poll(() => received).toEqual(["one", "two", "three"]);
  await close();
});
