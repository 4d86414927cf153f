// Output faster than the coordinator takes it waits in the agent's outbox (its memory budget, then
// the spill file), not in the socket's own unbounded buffer; once the coordinator reads again,
// everything arrives, in order.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { type AddressInfo, type WebSocket, WebSocketServer } from "ws";
import { Connection } from "../../agent/connection.ts";
import { Outbox } from "../../agent/outbox.ts";
import { MAX_LOG_CHUNK_BYTES } from "../../protocol/limits.ts";
import type { JobMessage } from "../../protocol/messages.ts";

const dir = mkdtempSync(join(tmpdir(), "jobfleet-flow-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const CHUNKS = 192;

test("a coordinator that stops reading holds the agent's output in its outbox, and gets all of it once it reads", { timeout: 60_000 }, async () => {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", maxPayload: 2 * MAX_LOG_CHUNK_BYTES });
  await new Promise((resolve) => wss.once("listening", resolve));
  const received: number[] = [];
  const peer = new Promise<WebSocket>((resolve) =>
    wss.on("connection", (socket) => {
      socket.on("message", (data) => received.push((JSON.parse(data.toString()) as JobMessage).seq));
      // Stops reading: what the agent sends piles up in the kernel, then on the agent's side.
      (socket as unknown as { _socket: { pause(): void } })._socket.pause();
      resolve(socket);
    }),
  );

  let outbox: Outbox | undefined;
  const connection = new Connection([`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`], {
    open: () => {},
    message: () => {},
    close: () => {},
    drained: () => outbox?.pump(),
    warn: () => {},
  });
  let transmitted = 0;
  outbox = new Outbox(
    (text) => {
      transmitted += text.length;
      connection.sendText(text);
    },
    { memoryBytes: 1 << 20, spillDir: dir, ready: () => connection.open && !connection.congested },
  );
  connection.start();
  const socket = await peer;
  await new Promise((r) => setTimeout(r, 50));

  outbox.open("1");
  const chunk = "x".repeat(MAX_LOG_CHUNK_BYTES - 100);
  for (let i = 0; i < CHUNKS; i++) outbox.push({ type: "job.log", jobId: "1", data: chunk });
  await new Promise((r) => setTimeout(r, 500));
  const pushed = CHUNKS * chunk.length;
  // Only what the kernel's buffers and the high-water mark hold went out; the rest waits, spilled.
  expect(transmitted).toBeLessThan(16 << 20);
  expect(outbox.backlog).toBeGreaterThan(CHUNKS / 2);
  expect(outbox.memoryBytes).toBeLessThanOrEqual(1 << 20);
  expect(outbox.spilledBytes).toBeGreaterThan(pushed / 2);

  (socket as unknown as { _socket: { resume(): void } })._socket.resume();
  const deadline = Date.now() + 30_000;
  while (received.length < CHUNKS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  expect(received).toEqual(Array.from({ length: CHUNKS }, (_, i) => i + 1));
  expect(outbox.backlog).toBe(0);

  await connection.stop();
  outbox.close();
  await new Promise<void>((resolve) => wss.close(() => resolve()));
});
