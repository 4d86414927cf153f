// Carries bus events between coordinators over Postgres LISTEN/NOTIFY. Events are gathered for a
// few milliseconds and sent as few notifications as fit (a NOTIFY per event would serialise
// commits); each coordinator drops its own. Where a notification may have been missed (the
// listening connection was re-established), `onResync` lets the dispatcher look again.
import { randomUUID } from "node:crypto";
import type { Bus, EventName, Events } from "./bus.ts";

export const CHANNEL = "jobfleet";
/** Postgres refuses payloads of 8000 bytes or more. */
const MAX_PAYLOAD = 7900;
const GATHER_MS = 5;

type Wire = [EventName, unknown[]];

export type Listener = {
  listen(channel: string, onPayload: (payload: string) => void, onListen: () => void): Promise<() => Promise<void>>;
  /** Sends the payloads in order, in one statement and one commit. */
  notify(channel: string, payloads: string[]): Promise<void>;
};

/** Splits a batch of events into one wire entry each, and an enqueued batch into one per order. */
function flatten(events: Wire[]): Wire[] {
  return events.flatMap(([name, args]): Wire[] =>
    name === "enqueued" ? (args[0] as Events["enqueued"][0]).map((order) => ["enqueued", [[order]]]) : [[name, args]],
  );
}

export function pack(from: string, events: Wire[]): string[] {
  const payloads: string[] = [];
  let batch: string[] = [];
  let size = 0;
  const close = () => {
    if (batch.length > 0) payloads.push(`{"from":${JSON.stringify(from)},"events":[${batch.join(",")}]}`);
    batch = [];
    size = 0;
  };
  for (const event of flatten(events)) {
    const text = JSON.stringify(event);
    if (size + text.length + 64 > MAX_PAYLOAD) close();
    batch.push(text);
    size += text.length + 1;
  }
  close();
  return payloads;
}

export class Relay {
  readonly id = randomUUID();
  private readonly ownPrefix = `{"from":${JSON.stringify(this.id)},`;
  private pending: Wire[] = [];
  /** Work orders with a `changed` event already pending: one per flush says as much as many. */
  private changed = new Set<string>();
  private timer?: NodeJS.Timeout;
  private unlisten?: () => Promise<void>;
  private first = true;

  constructor(
    private readonly bus: Bus,
    private readonly db: Listener,
    private readonly onResync: () => void,
    private readonly onError: (error: unknown) => void,
  ) {}

  async start(): Promise<void> {
    this.unlisten = await this.db.listen(CHANNEL, (payload) => this.receive(payload), () => this.listening());
    this.bus.publish = (event, args) => {
      if (event === "changed") {
        const id = (args as Events["changed"])[0];
        if (this.changed.has(id)) return;
        this.changed.add(id);
      }
      this.pending.push([event, args as unknown[]]);
      this.timer ??= setTimeout(() => this.flush(), GATHER_MS);
    };
  }

  async stop(): Promise<void> {
    this.bus.publish = undefined;
    clearTimeout(this.timer);
    await this.flush();
    await this.unlisten?.();
  }

  private listening(): void {
    if (!this.first) this.onResync();
    this.first = false;
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    const events = this.pending;
    this.pending = [];
    this.changed.clear();
    const payloads = pack(this.id, events);
    // One commit for the whole flush: a commit per notification was 40% of the commits of a busy fleet.
    if (payloads.length > 0) await this.db.notify(CHANNEL, payloads).catch(this.onError);
  }

  private receive(payload: string): void {
    // Every coordinator hears its own notifications too; those are dropped unparsed.
    if (payload.startsWith(this.ownPrefix)) return;
    let message: { from: string; events: Wire[] };
    try {
      message = JSON.parse(payload);
    } catch (error) {
      return this.onError(error);
    }
    if (message.from === this.id) return;
    for (const [name, args] of message.events) this.bus.deliver(name, ...(args as never as Events[typeof name]));
  }
}
