// Exponential backoff with jitter, so a fleet that lost its coordinator does not return in step.
/** The longest wait between redials, and between resends of refused reports, once a drain began. */
export const URGENT_MS = 1000;

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly baseMs = 500,
    private maxMs = 30_000,
  ) {}

  /** No delay from now on passes `ms`. */
  cap(ms: number): void {
    this.maxMs = Math.min(this.maxMs, ms);
  }

  /** The next delay: half of the exponential step, plus a random part of the other half. */
  next(): number {
    const step = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt++);
    return step / 2 + Math.random() * (step / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/**
 * A call put off by a backoff step, one pending at a time; once `urgent`, it and every later one
 * come within `URGENT_MS`.
 */
export class Retry {
  readonly backoff: Backoff;
  private timer?: NodeJS.Timeout;
  /** When the pending call goes (`Date.now()`). */
  private due = 0;

  constructor(
    private readonly call: () => void,
    baseMs?: number,
  ) {
    this.backoff = new Backoff(baseMs);
  }

  get pending(): boolean {
    return this.timer !== undefined;
  }

  /** Makes the call after `delayMs` (by default the next backoff step), in place of one pending; returns the delay. */
  schedule(delayMs = this.backoff.next()): number {
    clearTimeout(this.timer);
    this.due = Date.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.call();
    }, delayMs);
    return delayMs;
  }

  urgent(): void {
    this.backoff.cap(URGENT_MS);
    if (this.timer && this.due - Date.now() > URGENT_MS) this.schedule();
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
