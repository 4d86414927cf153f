// What one coordinator notifies the others, packed into as few notifications as fit under
// Postgres' limit on a payload.
import type { EventName, Events } from "../bus.ts";

/** Postgres refuses payloads of 8000 bytes or more. */
const MAX_PAYLOAD = 7999;

export type Wire = { [K in EventName]: [K, Events[K]] }[EventName];

/** Sent in the first notification of a flush only. */
type Flags = {
  hello?: true;
  welcome?: true;
  /** The sender watches exactly the work orders in `watch` here and in the rest of the flush. */
  reset?: true;
};

/** What a flush says; written only by coordinators of this version or an earlier one. */
export type Outgoing = Flags & {
  events: Wire[];
  /** Work orders the sender began watching: it has log followers there, and wants their changes. */
  watch?: string[];
  /** Work orders it stopped watching. */
  unwatch?: string[];
};

/**
 * One notification. `watch` is in every one this version sends, if only empty: a coordinator of
 * an earlier version leaves it out, and wants every change relayed to it.
 */
export type Message = Flags & { from: string; events: Wire[]; watch?: string[]; unwatch?: string[] };

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

const SECTIONS = ["events", "watch", "unwatch"] as const;

/**
 * Packs a flush into as few payloads under Postgres' limit as it fits in, its flags in the first.
 * An event that cannot be made to fit is left out and handed to `onTooLarge`: one such payload
 * would fail the whole flush.
 */
export function pack(from: string, out: Outgoing, onTooLarge: (event: Wire) => void = () => {}): string[] {
  const flags = { hello: out.hello, welcome: out.welcome, reset: out.reset };
  const flagText = Object.entries(flags).flatMap(([name, on]) => (on ? [`,"${name}":true`] : [])).join("");
  const skeleton = (first: boolean) => Buffer.byteLength(`{"from":${JSON.stringify(from)}${first ? flagText : ""},"events":[],"watch":[],"unwatch":[]}`);
  const payloads: string[] = [];
  let parts: Record<(typeof SECTIONS)[number], string[]> = { events: [], watch: [], unwatch: [] };
  let size = skeleton(true);
  const close = () => {
    const first = payloads.length === 0;
    const { events, watch, unwatch } = parts;
    const unwatched = unwatch.length > 0 ? `,"unwatch":[${unwatch.join(",")}]` : "";
    payloads.push(`{"from":${JSON.stringify(from)}${first ? flagText : ""},"events":[${events.join(",")}],"watch":[${watch.join(",")}]${unwatched}}`);
    parts = { events: [], watch: [], unwatch: [] };
    size = skeleton(false);
  };
  const holding = () => SECTIONS.some((s) => parts[s].length > 0);
  const add = (section: (typeof SECTIONS)[number], text: string) => {
    // With the comma before the next one.
    const bytes = Buffer.byteLength(text) + 1;
    if (size + bytes > MAX_PAYLOAD && holding()) close();
    parts[section].push(text);
    size += bytes;
  };
  for (const event of flatten(out.events)) {
    const text = encode(event, MAX_PAYLOAD - skeleton(true) - 1);
    if (text === undefined) onTooLarge(event);
    else add("events", text);
  }
  for (const id of out.watch ?? []) add("watch", JSON.stringify(id));
  for (const id of out.unwatch ?? []) add("unwatch", JSON.stringify(id));
  if (holding() || (payloads.length === 0 && flagText !== "")) close();
  return payloads;
}
