// Events between the coordinator's parts: HTTP handlers announce, the dispatcher, the agent
// sessions and the log followers listen. With several coordinators, a relay carries each event
// to the others (`publish`), which `deliver` it to their own listeners.
import { EventEmitter } from "node:events";
import type { Selector } from "../protocol/selector.ts";

export type Enqueued = {
  id: string;
  /** Null when relayed from another coordinator without it (too large to notify): it may match any group. */
  selector: Selector | null;
  targetAgent: string | null;
};

/** A wake-up for every queue-mode group: work may be there that no wake-up announced. */
export const EVERY_QUEUE: Enqueued = { id: "0", selector: null, targetAgent: null };

export type Events = {
  /** Work orders became claimable. */
  enqueued: [orders: Enqueued[]];
  /** The agent holding a job must stop it. */
  cancel: [request: { jobId: string; agentId: string; reason: string }];
  /** A work order or one of its jobs changed: state, status or log. */
  changed: [workOrderId: string];
};

export type EventName = keyof Events;

export class Bus {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  /** Listeners to one work order's changes, by its id: a change costs its own followers, not everyone's. */
  private readonly watchers = new Map<string, Set<() => void>>();
  /** Set by a relay: sends every emitted event to the other coordinators too. */
  publish?: <K extends EventName>(event: K, args: Events[K]) => void;
  /** Set by a relay: told when a work order gets its first watcher here (true) and loses its last (false). */
  onWatch?: (workOrderId: string, watching: boolean) => void;

  emit<K extends EventName>(event: K, ...args: Events[K]): void {
    this.deliver(event, ...args);
    this.publish?.(event, args);
  }

  /** Hands an event to this coordinator's listeners only. */
  deliver<K extends EventName>(event: K, ...args: Events[K]): void {
    if (event === "changed") for (const listener of this.watchers.get(args[0] as string) ?? []) listener();
    this.emitter.emit(event, ...args);
  }

  /** Subscribes to the changes of one work order; returns the unsubscribe function. */
  watch(workOrderId: string, listener: () => void): () => void {
    let listeners = this.watchers.get(workOrderId);
    if (!listeners) {
      this.watchers.set(workOrderId, (listeners = new Set()));
      this.onWatch?.(workOrderId, true);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size > 0 || this.watchers.get(workOrderId) !== listeners) return;
      this.watchers.delete(workOrderId);
      this.onWatch?.(workOrderId, false);
    };
  }

  /** The work orders with a watcher here. */
  watched(): string[] {
    return [...this.watchers.keys()];
  }

  /** Subscribes; returns the unsubscribe function. */
  on<K extends EventName>(event: K, listener: (...args: Events[K]) => void): () => void {
    this.emitter.on(event, listener as (...args: unknown[]) => void);
    return () => this.emitter.off(event, listener as (...args: unknown[]) => void);
  }
}
