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
