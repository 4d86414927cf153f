// A token bucket: `perSecond` refills, up to `burst`. `take` charges every message, into debt past
// the burst: messages a socket had already read when it was paused are handled all the same, and
// the pause that follows must last until they are paid for. `tryTake` charges only what it lets
// through: a refused request costs its sender nothing more.
export type Rate = { perSecond: number; burst: number };

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: Rate,
    now = performance.now(),
  ) {
    this.tokens = rate.burst;
    this.last = now;
  }

  /** Charges one; returns 0, or the milliseconds until the bucket is out of debt. */
  take(now = performance.now()): number {
    this.refill(now);
    this.tokens--;
    return this.tokens >= 0 ? 0 : this.until(0);
  }

  /** Charges one and returns 0 if one is there; else the milliseconds until one is, charging nothing. */
  tryTake(now = performance.now()): number {
    this.refill(now);
    if (this.tokens < 1) return this.until(1);
    this.tokens--;
    return 0;
  }

  /** Gives back one taken, as far as the burst. */
  refund(now = performance.now()): void {
    this.refill(now);
    this.tokens = Math.min(this.rate.burst, this.tokens + 1);
  }

  /** The milliseconds until one may be taken, charging nothing. */
  wait(now = performance.now()): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : this.until(1);
  }

  /** Whether the bucket is as full as if unused: forgetting it then changes nothing. */
  full(now = performance.now()): boolean {
    this.refill(now);
    return this.tokens >= this.rate.burst;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.rate.burst, this.tokens + ((now - this.last) / 1000) * this.rate.perSecond);
    this.last = now;
  }

  private until(level: number): number {
    return Math.ceil(((level - this.tokens) / this.rate.perSecond) * 1000);
  }
}
