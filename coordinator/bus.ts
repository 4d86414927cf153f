// In-process events between the coordinator's parts: HTTP handlers announce, the dispatcher,
// the agent sessions and the log followers listen.
import { EventEmitter } from "node:events";
import type { Selector } from "../protocol/selector.ts";

export type Enqueued = { id: string; selector: Selector; targetAgent: string | null };

type Events = {
  /** Work orders became claimable. */
  enqueued: [orders: Enqueued[]];
  /** The agent holding a job must stop it. */
  cancel: [request: { jobId: string; agentId: string; reason: string }];
  /** A work order or one of its jobs changed: state, status or log. */
  changed: [workOrderId: string];
};

export class Bus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    this.emitter.emit(event, ...args);
  }

  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof Events>(event: K, listener: (...args: Events[K]) => void): () => void {
    this.emitter.on(event, listener as (...args: unknown[]) => void);
    return () => this.emitter.off(event, listener as (...args: unknown[]) => void);
  }
}
