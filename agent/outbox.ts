// Job messages on their way to the coordinator. Each gets the job's next sequence number and is
// kept until the coordinator acknowledges it, so everything unacknowledged can be sent again after
// a reconnect; the coordinator ignores what it already applied. Past `memoryBytes` of messages
// waiting, further ones are kept in spill files (only their place in them stays in memory), so a
// long disconnection under heavy output costs disk, not the agent's memory (while the disk takes
// it: a message that cannot be spilled stays in memory). A spill file is created anew under a
// random name, and unlinked at once: no one else's file or link is written to, and its disk is
// the system's again once the agent lets it go, however the agent ends. Files are filled one after
// another, each to the memory budget; one whose messages are all acknowledged is let go, so a
// backlog that stays above the budget holds the disk its messages take, not all that passed.
// Messages go out only while the wire takes them (`ready`); the rest wait here, in order, until
// `pump()`, so output faster than the coordinator takes it waits in the budget and the spill files,
// never unbounded in the socket's own buffer. What the coordinator acknowledged of a job's state
// (its start, last status and end) is remembered, and a recent ended job's too, to be told again
// should its database lose what it acknowledged (`resume`).
import { randomUUID } from "node:crypto";
import { closeSync, ftruncateSync, openSync, readSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { JobMessage } from "../protocol/messages.ts";

type Distribute<T> = T extends unknown ? Omit<T, "seq"> : never;
export type JobMessageBody = Distribute<JobMessage>;

/** `said`: a message about the job's state (not its output) held in memory, kept to be told again (`resume`). */
type Entry = { jobId: string; seq: number; type: JobMessage["type"]; released: boolean; said?: JobMessageBody } & (
  | { text: string; bytes: number }
  | { spilled: { segment: Segment; position: number; length: number } }
);

/** An open spill file: its size, and how many of its messages are not yet acknowledged. */
type Segment = { fd: number; size: number; entries: number };

/** `told`: the last acknowledged message of each kind about the job's state, with its number. */
type Stream = { next: number; unacked: Entry[]; told: Map<JobMessage["type"], Told> };
type Told = { seq: number; body: JobMessageBody };

/** Ended jobs whose state is remembered, most recent kept. */
const ENDED_KEPT = 1024;

export type OutboxOptions = {
  memoryBytes: number;
  /** Where spill files are made (and at once unlinked). */
  spillDir: string;
  /** Whether the wire takes another message now (default: always). */
  ready?: () => boolean;
  warn?: (message: string, fields: Record<string, unknown>) => void;
};

export class Outbox {
  private readonly streams = new Map<string, Stream>();
  /** Jobs whose end the coordinator acknowledged, oldest first. */
  private readonly ended = new Map<string, Stream>();
  private readonly waiters = new Set<() => void>();
  private memory = 0;
  /** The spill files open, the last the one written to. */
  private readonly segments = new Set<Segment>();
  private spill?: Segment;
  /** The last spill failed (warned of once until one succeeds). */
  private spillFailing = false;
  /** Messages not yet sent (or to be sent again), oldest first from `head`. */
  private waiting: Entry[] = [];
  private head = 0;
  private readonly ready: () => boolean;

  constructor(
    /** Sends one job message, as its JSON text (kept as text here, so it is serialised once). */
    private readonly transmit: (text: string) => void,
    private readonly options: OutboxOptions,
  ) {
    this.ready = options.ready ?? (() => true);
  }

  /** Starts a job's stream after `seq`, the last number the coordinator holds. */
  open(jobId: string, seq = 0): void {
    if (!this.streams.has(jobId)) this.streams.set(jobId, { next: seq + 1, unacked: [], told: new Map() });
  }

  has(jobId: string): boolean {
    return this.streams.has(jobId);
  }

  /** Bytes of waiting messages held in memory (spilled ones not counted). */
  get memoryBytes(): number {
    return this.memory;
  }

  /** Bytes the spill files take. */
  get spilledBytes(): number {
    let bytes = 0;
    for (const segment of this.segments) bytes += segment.size;
    return bytes;
  }

  push(body: JobMessageBody): void {
    const stream = this.streams.get(body.jobId);
    if (!stream) throw new Error(`job ${body.jobId} has no open stream`);
    this.append(stream, body);
    this.pump();
  }

  private append(stream: Stream, body: JobMessageBody): void {
    const entry = this.entry(body, stream.next++);
    stream.unacked.push(entry);
    this.waiting.push(entry);
  }

  /** Keeps the message; one about the job's state held in memory keeps its body too (a spilled one's is read back at its acknowledgement). */
  private entry(body: JobMessageBody, seq: number): Entry {
    const entry = this.keep({ ...body, seq } as JobMessage);
    if (body.type !== "job.log" && "text" in entry) entry.said = body;
    return entry;
  }

  /** Sends what waits, in order, for as long as the wire takes it. */
  pump(): void {
    while (this.head < this.waiting.length && this.ready()) {
      const entry = this.waiting[this.head++]!;
      if (!entry.released) this.transmit(this.text(entry));
    }
    if (this.head === this.waiting.length) this.waiting = [];
    else if (this.head < 1024 || this.head * 2 < this.waiting.length) return;
    else this.waiting = this.waiting.slice(this.head);
    this.head = 0;
  }

  /** Messages waiting for the wire. */
  get backlog(): number {
    return this.waiting.length - this.head;
  }

  private keep(message: JobMessage): Entry {
    const text = JSON.stringify(message);
    const bytes = Buffer.byteLength(text);
    const { jobId, seq, type } = message;
    if (this.memory + bytes > this.options.memoryBytes) {
      try {
        return { jobId, seq, type, released: false, spilled: this.spilled(text, bytes) };
      } catch (error) {
        // A full disk must not cost the message, nor the agent: it is kept in memory, over budget.
        if (!this.spillFailing) this.options.warn?.("the outbox cannot spill to disk; keeping messages in memory", { error: String(error) });
        this.spillFailing = true;
      }
    }
    this.memory += bytes;
    return { jobId, seq, type, released: false, text, bytes };
  }

  /** Writes `text` at the end of the spill file; where it stands, or a throw with nothing kept. */
  private spilled(text: string, bytes: number): { segment: Segment; position: number; length: number } {
    if (!this.spill || (this.spill.size > 0 && this.spill.size + bytes > this.options.memoryBytes)) this.spill = this.newSegment();
    const segment = this.spill;
    const position = segment.size;
    // Written at its place: a failed or short write leaves what is before it whole, and is overwritten.
    if (writeSync(segment.fd, text, position) < bytes) throw new Error("short write to the spill file");
    segment.size += bytes;
    segment.entries++;
    this.spillFailing = false;
    return { segment, position, length: bytes };
  }

  private newSegment(): Segment {
    const path = join(this.options.spillDir, `jobfleet-agent-${randomUUID()}.spill`);
    // Made here (wx: not a file or link already there), then unlinked while it stays open.
    const fd = openSync(path, "wx+", 0o600);
    unlinkSync(path);
    const segment = { fd, size: 0, entries: 0 };
    this.segments.add(segment);
    return segment;
  }

  private body(entry: Entry): JobMessageBody {
    const { seq: _, ...body } = JSON.parse(this.text(entry)) as JobMessage;
    return body;
  }

  private text(entry: Entry): string {
    if ("text" in entry) return entry.text;
    const { segment, position, length } = entry.spilled;
    const buffer = Buffer.alloc(length);
    readSync(segment.fd, buffer, 0, length, position);
    return buffer.toString("utf8");
  }

  private release(entry: Entry): void {
    entry.released = true;
    if ("text" in entry) {
      this.memory -= entry.bytes;
      return;
    }
    const { segment } = entry.spilled;
    if (--segment.entries > 0) return;
    // Nothing in it waits any more: the file written to starts over, an earlier one is let go.
    if (segment === this.spill) {
      ftruncateSync(segment.fd, 0);
      segment.size = 0;
    } else {
      closeSync(segment.fd);
      this.segments.delete(segment);
    }
  }

  /** Drops what the coordinator holds; a job's stream closes once its `finished` is held. */
  ack(jobId: string, seq: number): void {
    const stream = this.streams.get(jobId);
    if (!stream) return;
    while (stream.unacked.length > 0 && stream.unacked[0]!.seq <= seq) {
      const entry = stream.unacked.shift()!;
      if (entry.type !== "job.log") stream.told.set(entry.type, { seq: entry.seq, body: entry.said ?? this.body(entry) });
      this.release(entry);
    }
    if (stream.unacked.length === 0 && stream.told.has("job.finished")) this.end(jobId, stream);
    this.wake();
  }

  private end(jobId: string, stream: Stream): void {
    this.streams.delete(jobId);
    this.ended.delete(jobId);
    this.ended.set(jobId, stream);
    if (this.ended.size > ENDED_KEPT) this.ended.delete(this.ended.keys().next().value!);
  }

  /**
   * The coordinator holds the job's messages up to `seq` (its welcome says so); whether the job is
   * known here. Less than it acknowledged means its database lost commits (PGlite after a power
   * loss, a failover to a lagging replica): what it lost is told again (`refill`), before what it
   * never acknowledged. A recent job whose end was acknowledged is told again too, rather than
   * disowned and run again.
   */
  resume(jobId: string, seq: number): boolean {
    const stream = this.streams.get(jobId) ?? this.ended.get(jobId);
    if (!stream) return false;
    if (seq >= acked(stream)) {
      this.ack(jobId, seq);
      return this.streams.has(jobId);
    }
    this.ended.delete(jobId);
    this.streams.set(jobId, stream);
    this.refill(jobId, stream, seq);
    return true;
  }

  /**
   * Fills the numbers the coordinator lost (after `seq`, up to what it acknowledged) with the state
   * messages among them, a log line for the output among them, and the job's last status again for
   * any number left; the unacknowledged keep theirs. Copies of them still on their way from an
   * earlier connection are then repeats, which the coordinator ignores, not messages out of place.
   */
  private refill(jobId: string, stream: Stream, seq: number): void {
    const lost = [...stream.told.values()].filter((told) => told.seq > seq).sort((a, b) => a.seq - b.seq);
    const acknowledged = acked(stream);
    const missing = acknowledged - seq;
    const output = missing - lost.length;
    this.options.warn?.("the coordinator lost messages it had acknowledged; telling it again", { job: jobId, holds: seq, acknowledged });
    const again: JobMessageBody[] = lost.map((told) => told.body).filter((body) => body.type !== "job.status" && body.type !== "job.finished");
    if (output > 0) again.push({ type: "job.log", jobId, data: lostOutput(output) });
    const finish = lost.find((told) => told.body.type === "job.finished");
    const status = stream.told.get("job.status")?.body ?? { type: "job.status", jobId, status: LOST_STATUS };
    while (again.length < missing - (finish ? 1 : 0)) again.push(status);
    if (finish) again.push(finish.body);
    for (const told of lost) stream.told.delete(told.body.type);
    const filled = again.map((body, i) => this.entry(body, seq + 1 + i));
    stream.unacked = [...filled, ...stream.unacked];
  }

  /** Drops a job's stream with what it holds: the coordinator will never take its messages. */
  forget(jobId: string): void {
    this.ended.delete(jobId);
    const stream = this.streams.get(jobId);
    if (!stream) return;
    for (const entry of stream.unacked) this.release(entry);
    this.streams.delete(jobId);
    this.wake();
  }

  /** Sends every unacknowledged message again (of one job, or of all), job by job, each job's in order; returns how many. */
  resend(jobId?: string): number {
    const again = (id: string) => jobId === undefined || id === jobId;
    this.waiting = this.waiting.slice(this.head).filter((entry) => !entry.released && !again(entry.jobId));
    this.head = 0;
    let count = 0;
    // One by one: a stream can hold more entries than a spread call takes arguments.
    for (const [id, stream] of this.streams) {
      if (!again(id)) continue;
      for (const entry of stream.unacked) this.waiting.push(entry);
      count += stream.unacked.length;
    }
    this.pump();
    return count;
  }

  /**
   * Resolves once every message pushed so far is acknowledged (or forgotten). A job still running
   * counts once what it has said is held: a run that never ends holds up no one waiting here.
   */
  settled(): Promise<void> {
    if (this.acknowledged()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.add(resolve));
  }

  private acknowledged(): boolean {
    for (const stream of this.streams.values()) if (stream.unacked.length > 0) return false;
    return true;
  }

  private wake(): void {
    if (this.waiters.size === 0 || !this.acknowledged()) return;
    for (const resolve of this.waiters) resolve();
    this.waiters.clear();
  }

  /** Lets the spill files go. */
  close(): void {
    for (const segment of this.segments) closeSync(segment.fd);
    this.segments.clear();
    this.spill = undefined;
  }
}

/** The highest number the coordinator acknowledged: each job's are numbered one after another. */
function acked(stream: Stream): number {
  return (stream.unacked[0]?.seq ?? stream.next) - 1;
}

/** The job's status where it had none to tell again (see `refill`). */
const LOST_STATUS = "[jobfleet] messages lost by the coordinator's database";

function lostOutput(messages: number): string {
  return `[jobfleet] ${messages} message${messages === 1 ? " of this job was" : "s of this job were"} lost here (the coordinator's database lost them after acknowledging them); output may be missing\n`;
}
