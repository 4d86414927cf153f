// A job printing at full speed to a coordinator that reads slowly (its database writing logs slower
// than the job prints, a slow link): the agent's ping waits behind all it already handed to its
// socket, and the pong comes back after the next beat. The agent once cut the connection as if the
// coordinator had vanished, though the coordinator acknowledged its messages all along, and sent
// again what was in flight: the slower the coordinator, the more the agent sent it.
import { expect, test } from "vitest";
import { z } from "zod";
import type { Adapter, RunResult } from "../../adapters/adapter.ts";
import { Proxy } from "../support/proxy.ts";
import { JOB, useScriptedCoordinator } from "../support/scripted-coordinator.ts";

const scripted = useScriptedCoordinator();

test("a coordinator that reads slowly but acknowledges all along is not left for dead", { timeout: 60_000 }, async () => {
  let assigned = false;
  const { url, connections } = await scripted.coordinator((message, send) => {
    if (message.type === "hello") {
      return send({ type: "welcome", agentId: "1", heartbeatSeconds: 1, leaseSeconds: 60, jobs: assigned ? [{ jobId: "7", seq: 0 }] : [] });
    }
    if (message.type === "claim" && !assigned) {
      assigned = true;
      send({ type: "assign", job: JOB });
    }
    // Every job message is acknowledged as it is read: the coordinator is alive and talking.
    if ("seq" in message) send({ type: "ack", jobId: message.jobId, seq: message.seq });
  });
  const proxy = await Proxy.to({ host: "127.0.0.1", port: Number(new URL(url).port) }, { clientBytesPerSecond: 512 * 1024 });
  scripted.cleanup(() => proxy.close());
  // A job that prints 64 KiB every 10 ms (6.4 MB/s) for 8 s.
  const adapter: Adapter<unknown> = {
    name: "exec",
    spec: z.unknown(),
    start: async (ctx) => {
      const line = `${"x".repeat(64 * 1024 - 1)}\n`;
      const timer = setInterval(() => ctx.log(line), 10);
      return {
        result: new Promise<RunResult>((r) => setTimeout(() => (clearInterval(timer), r({ outcome: "succeeded", exitCode: 0 })), 8_000)),
        cancel: async () => {},
      };
    },
  };
  scripted.agent(`ws://127.0.0.1:${proxy.port}`, { name: "noisy", adapter, cancelGraceMs: 1000, stopMs: 0 });
  await new Promise((r) => setTimeout(r, 9_000));
  expect(connections()).toBe(1);
});
