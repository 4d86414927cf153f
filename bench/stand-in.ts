// Scenario 1's floor: the same agent processes against a stand-in for the coordinator that costs
// next to nothing. It speaks the agent protocol as the coordinator does on the wire (a welcome, an
// assignment for each claimed slot, each job's messages acknowledged with the next assignment or
// at the end of the turn, frames corked a turn), but keeps its jobs in memory, checks nothing
// beyond JSON, and has no database. What the fleet reaches against it bounds what it can reach
// against a real coordinator on this machine.
import type { AddressInfo } from "node:net";
import { type WebSocket, WebSocketServer } from "ws";
import type { AgentMessage, CoordinatorMessage } from "../protocol/messages.ts";
import { TurnCork } from "../protocol/turn-cork.ts";
import { type FleetShape, bootAgents, NOOP_ORDER } from "./fleet.ts";
import { processCpuSeconds } from "./cpu.ts";
import { now } from "./support.ts";

export type StandInResult = {
  jobsPerSecond: number;
  /** CPU seconds per 1,000 jobs of the agent processes, and of the stand-in (the bench's own process). */
  cpuPerThousand: { agents: number; standIn: number };
  agentWritesPerJob: number;
};

/** Hands out `orders` no-op jobs to whoever claims them; `finished` resolves when all have ended. */
class StandIn {
  private assigned = 0;
  private ended = 0;
  private end!: () => void;
  readonly finished = new Promise<void>((resolve) => (this.end = resolve));

  private constructor(
    private readonly orders: number,
    private readonly server: WebSocketServer,
  ) {
    server.on("connection", (socket) => this.serve(socket));
  }

  static async listen(orders: number): Promise<StandIn> {
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve, reject) => server.once("listening", resolve).once("error", reject));
    return new StandIn(orders, server);
  }

  get ready(): { agentUrl: string; agentToken: string } {
    return { agentUrl: `ws://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1/agent`, agentToken: "stand-in" };
  }

  close(): Promise<void> {
    for (const client of this.server.clients) client.terminate();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private serve(socket: WebSocket): void {
    const cork = new TurnCork();
    const send = (message: CoordinatorMessage) => {
      cork.hold(socket);
      socket.send(JSON.stringify(message));
    };
    const acks = new Map<string, number>();
    const acknowledge = () => {
      for (const [jobId, seq] of acks) send({ type: "ack", jobId, seq });
      acks.clear();
    };
    socket.on("message", (data) => {
      const message = JSON.parse(data.toString()) as AgentMessage;
      if (message.type === "hello") send({ type: "welcome", agentId: "1", heartbeatSeconds: 10, leaseSeconds: 30, jobs: [] });
      else if (message.type === "claim") {
        // As the coordinator's, acknowledgements leave with the next assignment, in one frame write.
        acknowledge();
        for (let i = 0; i < message.slots && this.assigned < this.orders; i++) send(this.assign());
      }
      else if ("jobId" in message) {
        if (acks.size === 0) setImmediate(acknowledge);
        acks.set(message.jobId, message.seq);
        if (message.type === "job.finished" && ++this.ended === this.orders) this.end();
      }
    });
  }

  private assign(): CoordinatorMessage {
    const id = String(++this.assigned);
    const job = { jobId: id, workOrderId: id, attempt: 1, priority: 0, adapter: "exec" as const, spec: NOOP_ORDER.spec, timeoutSeconds: null, adopt: null };
    return { type: "assign", job };
  }
}

export async function standInThroughput(orders: number, shape: FleetShape): Promise<StandInResult> {
  const booting = bootAgents(shape);
  const standIn = await StandIn.listen(orders);
  try {
    const agents = await booting.fleet;
    const ownCpu = () => processCpuSeconds(process.pid);
    const before = { agents: agents.cpu(), standIn: ownCpu(), writes: agents.writes() };
    const start = now();
    agents.go(standIn);
    await standIn.finished;
    const seconds = (now() - start) / 1000;
    const perThousand = (cpu: number) => (cpu * 1000) / orders;
    return {
      jobsPerSecond: orders / seconds,
      cpuPerThousand: { agents: perThousand(agents.cpu() - before.agents), standIn: perThousand(ownCpu() - before.standIn) },
      agentWritesPerJob: (agents.writes() - before.writes) / orders,
    };
  } finally {
    await booting.stop();
    await standIn.close();
  }
}
