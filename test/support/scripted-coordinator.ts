// A coordinator scripted by the test over a real loopback WebSocket, for agent suites that need
// answers a real one would not give on cue (refused hellos, lost records, gaps), and a real `Agent`
// dialling it. Whatever they start is stopped after each test.
import { pino } from "pino";
import { afterEach } from "vitest";
import { type AddressInfo, type WebSocket, WebSocketServer } from "ws";
import type { Adapter } from "../../adapters/adapter.ts";
import { Agent } from "../../agent/agent.ts";
import type { AgentMessage, Assignment, CoordinatorMessage } from "../../protocol/messages.ts";

/** The one job the scripted coordinators assign. */
export const JOB: Assignment = { jobId: "7", workOrderId: "3", attempt: 1, priority: 0, adapter: "exec", spec: {}, timeoutSeconds: null, adopt: null };

export type Answer = (message: AgentMessage, send: (reply: CoordinatorMessage) => void, socket: WebSocket, n: number) => void;

export type Scripted = {
  /** Serves `answer` with each message of the `n`th connection (from 0). */
  coordinator(answer: Answer): Promise<{ url: string; connections: () => number }>;
  /** A started agent of capacity 1 dialling `url`, whose jobs run through `adapter`; stopped with `stopMs` after the test. */
  agent(url: string, options: { name: string; adapter: Adapter<unknown>; cancelGraceMs: number; stopMs?: number }): Agent;
  /** Runs `cleanup` after the test, before what was set up earlier. */
  cleanup(cleanup: () => Promise<void> | void): void;
};

export function useScriptedCoordinator(): Scripted {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return {
    cleanup: (cleanup) => void cleanups.push(cleanup),
    async coordinator(answer) {
      const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
      await new Promise((resolve) => wss.once("listening", resolve));
      cleanups.push(() => new Promise<void>((resolve) => wss.close(() => resolve())));
      let connections = 0;
      wss.on("connection", (socket: WebSocket) => {
        const n = connections++;
        const send = (reply: CoordinatorMessage) => socket.send(JSON.stringify(reply));
        socket.on("message", (data) => answer(JSON.parse(data.toString()) as AgentMessage, send, socket, n));
      });
      return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, connections: () => connections };
    },
    agent(url, { name, adapter, cancelGraceMs, stopMs = 1000 }) {
      const agent = new Agent({
        urls: [url],
        token: "t",
        name,
        labels: {},
        capacity: 1,
        mode: "queue",
        version: "test",
        cancelGraceMs,
        logger: pino({ level: "silent" }),
        adapters: () => adapter,
      });
      agent.start();
      cleanups.push(() => agent.stop(stopMs));
      return agent;
    },
  };
}
