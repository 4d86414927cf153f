// Carries bus events between coordinators over Postgres LISTEN/NOTIFY. Events are gathered for a
// few milliseconds and sent as few notifications as fit (a NOTIFY per event would serialise
// commits); each coordinator drops its own. Where a notification may have been missed (the
// listening connection was re-established), `onResync` lets the dispatcher look again.
// A coordinator alone on its database sends nothing. A starting one says `hello`; one that
// starts relaying then (or finds a listener it did not know of) sends `welcome`, and whoever hears
// it looks again for what was not relayed before. Every few seconds a relay looks for listeners
// other than itself, and stops sending once there are none. A replica of an earlier version says
// no hello: it is found by that look, and the welcome's wake-up without a selector makes its
// queue-mode agents look again.
import { randomUUID } from "node:crypto";
import type { Bus, EventName, Events } from "./bus.ts";

export const CHANNEL = "jobfleet";
/** Postgres refuses payloads of 8000 bytes or more. */
const MAX_PAYLOAD = 7999;
const GATHER_MS = 5;
const CHECK_EVERY_MS = 10_000;

type Wire = { [K in EventName]: [K, Events[K]] }[EventName];

/** What a coordinator notifies; written only by coordinators of this version, so read as such. */
type Message = { from: string; events: Wire[]; hello?: true; welcome?: true };

export type Listener = {
  listen(channel: string, onPayload: (payload: string) => void, onListen: () => void): Promise<() => Promise<void>>;
  /** Sends the payloads in order, in one statement and one commit. */
  notify(channel: string, payloads: string[]): Promise<void>;
  /** Whether anyone but this coordinator listens on the channel (true when it cannot tell). */
  othersListen(channel: string): Promise<boolean>;
};

/** Splits a batch of events into one wire entry each, and an enqueued batch into one per order. */
function flatten(events: Wire[]): Wire[] {
  return events.flatMap((event): Wire[] => (event[0] === "enqueued" ? event[1][0].map((order) => ["enqueued", [[order]]]) : [event]));
}

/** The event's text if it fits in `room` bytes; an order whose selector does not fit goes without it. */
function encode(event: Wire, room: number): string | undefined {
  const text = JSON.stringify(event);
  if (Buffer.byteLength(text) <= room) return text;
  const order = event[0] === "enqueued" ? event[1][0][0] : undefined;
  if (order?.selector) return encode(["enqueued", [[{ ...order, selector: null }]]], room);
  return undefined;
}

/**
 * Packs events into as few payloads under Postgres' limit as they fit in. An event that cannot be
 * made to fit is left out and handed to `onTooLarge`: one such payload would fail the whole flush.
 */
export function pack(from: string, events: Wire[], onTooLarge: (event: Wire) => void = () => {}): string[] {
  const head = `{"from":${JSON.stringify(from)},"events":[`;
  const room = MAX_PAYLOAD - Buffer.byteLength(head) - "]}".length;
  const payloads: string[] = [];
  let batch: string[] = [];
  let size = 0;
  const close = () => {
    if (batch.length > 0) payloads.push(`${head}${batch.join(",")}]}`);
    batch = [];
    size = 0;
  };
  for (const event of flatten(events)) {
    const text = encode(event, room);
    if (text === undefined) {
      onTooLarge(event);
      continue;
    }
    const bytes = Buffer.byteLength(text);
    if (size + bytes > room) close();
    batch.push(text);
    // With the comma before the next one.
    size += bytes + 1;
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
  private checker?: NodeJS.Timeout;
  private unlisten?: () => Promise<void>;
  private first = true;
  /** Whether another coordinator may be listening: only then are events sent. */
  private others = true;
  /** Bumped by every notification from another coordinator, so a look begun before it cannot undo what it proved. */
  private heard = 0;
  /** Greetings and looks under way, which a stop waits for. */
  private readonly underway = new Set<Promise<void>>();

  constructor(
    private readonly bus: Bus,
    private readonly db: Listener,
    private readonly onResync: () => void,
    private readonly onError: (error: unknown) => void,
    private readonly checkEveryMs = CHECK_EVERY_MS,
  ) {}

  async start(): Promise<void> {
    this.unlisten = await this.db.listen(CHANNEL, (payload) => this.receive(payload), () => this.listening());
    this.checker = setInterval(() => this.underway.size === 0 && this.track(this.look()), this.checkEveryMs).unref();
    this.bus.publish = (event, args) => {
      if (!this.others) return;
      if (event === "changed") {
        const id = (args as Events["changed"])[0];
        if (this.changed.has(id)) return;
        this.changed.add(id);
      }
      this.pending.push([event, args] as Wire);
      this.timer ??= setTimeout(() => this.flush(), GATHER_MS);
    };
    await this.greet();
  }

  async stop(): Promise<void> {
    this.bus.publish = undefined;
    clearTimeout(this.timer);
    clearInterval(this.checker);
    await Promise.all(this.underway);
    await this.flush();
    await this.unlisten?.();
  }

  private track(work: Promise<void>): void {
    const settled = work.catch(this.onError).finally(() => this.underway.delete(settled));
    this.underway.add(settled);
  }

  private listening(): void {
    if (!this.first) {
      this.onResync();
      // Others may have stopped sending while this one could not be seen listening.
      this.track(this.greet());
    }
    this.first = false;
  }

  /** Says hello, so that coordinators that send nothing start now, then looks for listeners. */
  private async greet(): Promise<void> {
    await this.db.notify(CHANNEL, [JSON.stringify({ from: this.id, events: [], hello: true } satisfies Message)]);
    await this.look();
  }

  private async look(): Promise<void> {
    const heard = this.heard;
    const others = await this.db.othersListen(CHANNEL);
    if (this.heard === heard) this.sendingTo(others);
  }

  private sendingTo(others: boolean): void {
    const starting = others && !this.others;
    this.others = others;
    if (starting) this.track(this.welcome());
  }

  /** What was not sent before now, the others look for themselves; if they cannot be told, the next look tries again. */
  private async welcome(): Promise<void> {
    const everyone: Wire = ["enqueued", [[{ id: "0", selector: null, targetAgent: null }]]];
    try {
      await this.db.notify(CHANNEL, [JSON.stringify({ from: this.id, events: [everyone], welcome: true } satisfies Message)]);
    } catch (error) {
      this.others = false;
      throw error;
    }
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    const events = this.pending;
    this.pending = [];
    this.changed.clear();
    const payloads = pack(this.id, events, ([name]) => this.onError(new Error(`relay: a ${name} event too large to notify, not sent`)));
    // One commit for the whole flush: a commit per notification was 40% of the commits of a busy fleet.
    if (payloads.length > 0) await this.db.notify(CHANNEL, payloads).catch(this.onError);
  }

  private receive(payload: string): void {
    // Every coordinator hears its own notifications too; those are dropped unparsed.
    if (payload.startsWith(this.ownPrefix)) return;
    let parsed: Message;
    try {
      parsed = JSON.parse(payload);
    } catch (error) {
      return this.onError(error);
    }
    if (parsed.from === this.id) return;
    this.heard++;
    this.sendingTo(true);
    if (parsed.welcome) this.onResync();
    for (const [name, args] of parsed.events) this.bus.deliver(name, ...(args as Events[typeof name]));
  }
}
