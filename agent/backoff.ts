// Exponential backoff with jitter, so a fleet that lost its coordinator does not return in step.
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly baseMs = 500,
    private readonly maxMs = 30_000,
  ) {}

  /** The next delay: half of the exponential step, plus a random part of the other half. */
  next(): number {
    const step = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt++);
    return step / 2 + Math.random() * (step / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
