// Database upkeep the coordinator does itself: a task run once enough has changed, and no sooner
// than an interval after its last run; then, not never (what changed within the interval is seen
// to when it ends). One run at a time.

export type UpkeepOptions = { threshold: number; minIntervalMs: number };

export class Upkeep {
  private changes = 0;
  private due: number;
  private last = -Infinity;
  private running?: Promise<void>;
  private later?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    /** Resolves to the changes that make the next run due, or nothing to keep the threshold. */
    private readonly task: () => Promise<number | void>,
    private readonly onError: (error: unknown) => void,
    private readonly options: UpkeepOptions,
  ) {
    this.due = options.threshold;
  }

  /** Counts `n` changes toward the next run. */
  add(n: number): void {
    this.changes += n;
    this.consider();
  }

  private consider(): void {
    if (this.stopped || this.changes < this.due || this.running || this.later) return;
    const wait = this.last + this.options.minIntervalMs - Date.now();
    if (wait > 0) {
      this.later = setTimeout(() => {
        this.later = undefined;
        this.consider();
      }, wait).unref();
      return;
    }
    this.changes = 0;
    this.last = Date.now();
    this.running = this.task()
      .then((due) => {
        if (due !== undefined) this.due = due;
      }, this.onError)
      .finally(() => {
        this.running = undefined;
        this.consider();
      });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.later);
    await this.running;
  }
}
