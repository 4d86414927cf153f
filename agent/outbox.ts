// Job messages on their way to the coordinator. Each gets the job's next sequence number and is
// kept until the coordinator acknowledges it, so everything unacknowledged can be sent again after
// a reconnect; the coordinator ignores what it already applied.
import type { JobMessage } from "../protocol/messages.ts";

type Distribute<T> = T extends unknown ? Omit<T, "seq"> : never;
export type JobMessageBody = Distribute<JobMessage>;

type Stream = { next: number; unacked: JobMessage[]; finished: boolean };

export class Outbox {
  private readonly streams = new Map<string, Stream>();
  private readonly waiters = new Set<() => void>();

  constructor(private readonly transmit: (message: JobMessage) => void) {}

  /** Starts a job's stream after `seq`, the last number the coordinator holds. */
  open(jobId: string, seq = 0): void {
    if (!this.streams.has(jobId)) this.streams.set(jobId, { next: seq + 1, unacked: [], finished: false });
  }

  has(jobId: string): boolean {
    return this.streams.has(jobId);
  }

  push(body: JobMessageBody): void {
    const stream = this.streams.get(body.jobId);
    if (!stream) throw new Error(`job ${body.jobId} has no open stream`);
    const message = { ...body, seq: stream.next++ } as JobMessage;
    stream.unacked.push(message);
    this.transmit(message);
  }

  /** Drops what the coordinator holds; a job's stream closes once its `finished` is held. */
  ack(jobId: string, seq: number): void {
    const stream = this.streams.get(jobId);
    if (!stream) return;
    while (stream.unacked.length > 0 && stream.unacked[0]!.seq <= seq) {
      if (stream.unacked.shift()!.type === "job.finished") stream.finished = true;
    }
    if (!stream.finished || stream.unacked.length > 0) return;
    this.streams.delete(jobId);
    if (this.streams.size === 0) for (const resolve of this.waiters.values()) resolve();
  }

  /** Sends every unacknowledged message again, job by job, each job's in order. */
  resend(jobId?: string): void {
    for (const [id, stream] of this.streams) {
      if (jobId === undefined || id === jobId) for (const message of stream.unacked) this.transmit(message);
    }
  }

  /** Resolves when every job's stream has been acknowledged to its end. */
  settled(): Promise<void> {
    if (this.streams.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.add(resolve));
  }
}
