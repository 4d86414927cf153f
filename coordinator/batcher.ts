// Gathers work items from many callers into batches that share one transaction and one commit.
// Batches run one after another (or up to `inFlight` side by side); what arrives while they run
// forms the next.
// A batch that fails for any reason but an outage is run again one item at a time, so one bad
// item cannot hold the others back. Each caller's promise settles only after its batch committed.
import { isUnavailable } from "./db/unavailable.ts";

type Item<In, Out> = { input: In; weight: number; resolve(output: Out): void; reject(error: unknown): void };

export type BatcherOptions<In> = {
  /** How long the first item waits for others; 0 runs a batch as soon as the event loop turns. */
  delayMs: number;
  maxBatch: number;
  /** A batch closes once its items weigh this much (a heavier item still goes, alone). */
  maxWeight?: number;
  weigh?: (input: In) => number;
  /** Batches that may run side by side (default 1: one after another). */
  inFlight?: number;
};

export class Batcher<In, Out> {
  private queue: Item<In, Out>[] = [];
  private queuedWeight = 0;
  private timer?: NodeJS.Timeout | NodeJS.Immediate;
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly runBatch: (inputs: In[]) => Promise<Out[]>,
    private readonly options: BatcherOptions<In>,
  ) {}

  /** What the items waiting for a batch weigh (the batch running not included). */
  get weight(): number {
    return this.queuedWeight;
  }

  submit(input: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      const weight = this.options.weigh?.(input) ?? 0;
      this.queue.push({ input, weight, resolve, reject });
      this.queuedWeight += weight;
      if (this.queue.length >= this.options.maxBatch || this.queuedWeight >= (this.options.maxWeight ?? Infinity)) this.flush();
      else this.timer ??= this.options.delayMs === 0 ? setImmediate(() => this.flush()) : setTimeout(() => this.flush(), this.options.delayMs);
    });
  }

  private flush(): void {
    clearTimeout(this.timer as NodeJS.Timeout);
    clearImmediate(this.timer as NodeJS.Immediate);
    this.timer = undefined;
    while (this.queue.length > 0 && this.running.size < (this.options.inFlight ?? 1)) {
      const run: Promise<void> = this.run(this.take()).finally(() => {
        this.running.delete(run);
        this.flush();
      });
      this.running.add(run);
    }
  }

  /** The next batch: up to maxBatch items, closed at the first that brings it to maxWeight. */
  private take(): Item<In, Out>[] {
    const limit = this.options.maxWeight ?? Infinity;
    let count = 0;
    let weight = 0;
    while (count < this.queue.length && count < this.options.maxBatch && weight < limit) weight += this.queue[count++]!.weight;
    this.queuedWeight -= weight;
    return this.queue.splice(0, count);
  }

  private async run(batch: Item<In, Out>[]): Promise<void> {
    try {
      const outputs = await this.runBatch(batch.map((item) => item.input));
      batch.forEach((item, i) => item.resolve(outputs[i]!));
    } catch (error) {
      if (isUnavailable(error) || batch.length === 1) return batch.forEach((item) => item.reject(error));
      for (const item of batch) await this.runBatch([item.input]).then(([output]) => item.resolve(output!), item.reject);
    }
  }

  /** Waits for what is queued to be done. */
  async drain(): Promise<void> {
    while (this.queue.length > 0 || this.running.size > 0) {
      this.flush();
      await Promise.all(this.running);
    }
  }
}
