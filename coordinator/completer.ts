// Applies agents' job messages in batches: what arrives within a few milliseconds shares one
// transaction, two statements and one commit, decided in arrival order (so each job's messages
// stay in order). Agents are split over a few lanes, each running its batches one after another:
// an agent's messages always take the same lane, so its jobs' order holds, while one lane's commit
// waits on disk another can be writing. A batch closes at 1 MiB of log text, so a burst of output
// does not make everyone wait behind one huge write. A message is answered only after its batch
// committed, so a crash before then loses nothing: the agent resends what was not acknowledged.
// A batch runs under a generic plan: a small one's custom plan was made afresh each time, and an
// idle server spent 0.3 ms planning its lock for 0.12 running it.
// Past a few MiB of log text waiting, the completer is congested and sessions stop reading until it
// has worked half of that off: output faster than the database takes it then waits in the agents'
// outboxes, each agent's its own, and a line from a quiet job is not queued here behind seconds of
// noisy ones.
import type { JobMessage } from "../protocol/messages.ts";
import { Batcher, type BatcherOptions } from "./batcher.ts";
import type { Database } from "./db/database.ts";
import { type Applied, type Incoming, jobApplyIn } from "./sql/job-apply.ts";

const DEFAULTS: BatcherOptions<Incoming> = {
  delayMs: 2,
  maxBatch: 500,
  maxWeight: 1 << 20,
  weigh: ({ message }) => (message.type === "job.log" ? message.data.length : 0),
};

/** Log text waiting for its batch, over all lanes, past which the completer is congested. */
const MAX_WAITING_LOG_BYTES = 2 << 20;

export type CompleterOptions = Partial<BatcherOptions<Incoming>> & {
  /**
   * Relief comes after this at the latest, caught up or not (default 1 s): whoever waits for it
   * has stopped reading agents' sockets, and an agent's pings wait behind that (its fence counts
   * from the last answer it heard).
   */
  maxReliefWaitMs?: number;
};

export class Completer {
  private readonly lanes: Batcher<Incoming, Applied>[];
  private readonly waiters: (() => void)[] = [];
  private reliefTimer?: NodeJS.Timeout;
  private readonly maxReliefWaitMs: number;

  constructor(db: Database, { maxReliefWaitMs = 1000, ...options }: CompleterOptions = {}, lanes = 2) {
    this.maxReliefWaitMs = maxReliefWaitMs;
    const run = (batch: Incoming[]) => {
      // A batch was just taken off the queue: what waits is lighter now.
      if (this.waiters.length > 0 && this.waitingBytes() <= MAX_WAITING_LOG_BYTES / 2) this.relieve();
      return db.generic.transaction((tx) => jobApplyIn(tx, batch));
    };
    this.lanes = Array.from({ length: lanes }, () => new Batcher(run, { ...DEFAULTS, ...options }));
  }

  /** `holdSeconds`: see `Incoming`. */
  apply(agentId: string, message: JobMessage, holdSeconds = 0): Promise<Applied> {
    return this.lanes[Number(BigInt(agentId) % BigInt(this.lanes.length))]!.submit({ agentId, message, holdSeconds });
  }

  get congested(): boolean {
    return this.waitingBytes() > MAX_WAITING_LOG_BYTES;
  }

  /** Resolves once the completer has worked what waits down to half its limit, or `maxReliefWaitMs` has passed. */
  relieved(): Promise<void> {
    if (!this.congested) return Promise.resolve();
    this.reliefTimer ??= setTimeout(() => this.relieve(), this.maxReliefWaitMs).unref();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private relieve(): void {
    clearTimeout(this.reliefTimer);
    this.reliefTimer = undefined;
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  private waitingBytes(): number {
    return this.lanes.reduce((sum, lane) => sum + lane.weight, 0);
  }

  /** Waits for what is queued to be applied. */
  async drain(): Promise<void> {
    await Promise.all(this.lanes.map((lane) => lane.drain()));
  }
}
