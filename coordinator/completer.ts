// Applies agents' job messages in batches: what arrives within a few milliseconds, from any agent,
// shares one transaction, two statements and one commit, decided in arrival order (so each job's
// messages stay in order).
// A message is answered only after its batch committed, so a crash before then loses nothing: the
// agent resends whatever was not acknowledged. A batch that fails for any reason but an outage is
// applied again one message at a time, so one bad message cannot hold the others back.
import type { JobMessage } from "../protocol/messages.ts";
import type { Database } from "./db/database.ts";
import { isUnavailable } from "./db/unavailable.ts";
import { type Applied, jobApply, jobApplyIn } from "./sql/job-apply.ts";

type Item = { agentId: string; message: JobMessage; resolve(applied: Applied): void; reject(error: unknown): void };

export type CompleterOptions = { delayMs: number; maxBatch: number };

export class Completer {
  private queue: Item[] = [];
  private timer?: NodeJS.Timeout;
  private flushing = false;

  constructor(
    private readonly db: Database,
    private readonly options: CompleterOptions = { delayMs: 2, maxBatch: 500 },
  ) {}

  apply(agentId: string, message: JobMessage): Promise<Applied> {
    return new Promise((resolve, reject) => {
      this.queue.push({ agentId, message, resolve, reject });
      if (this.queue.length >= this.options.maxBatch) void this.flush();
      else this.timer ??= setTimeout(() => void this.flush(), this.options.delayMs);
    });
  }

  /** Applies what is queued; batches run one after another, never side by side. */
  private async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = true;
    try {
      while (this.queue.length > 0) await this.applyBatch(this.queue.splice(0, this.options.maxBatch));
    } finally {
      this.flushing = false;
    }
  }

  private async applyBatch(batch: Item[]): Promise<void> {
    try {
      const results = await this.db.transaction((tx) => jobApplyIn(tx, batch));
      batch.forEach((item, i) => item.resolve(results[i]!));
    } catch (error) {
      if (isUnavailable(error) || batch.length === 1) return batch.forEach((item) => item.reject(error));
      for (const item of batch) await jobApply(this.db, item.agentId, item.message).then(item.resolve, item.reject);
    }
  }

  /** Waits for what is queued to be applied. */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.flushing) await this.flush().then(() => new Promise((r) => setImmediate(r)));
  }
}
