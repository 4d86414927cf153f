// A token bucket: how many messages an agent may send per second, with a burst allowance. Every
// message is charged, into debt past the burst: messages a socket had already read when it was
// paused are handled all the same, and the pause that follows must last until they are paid for.
export class TokenBucket {
  private tokens: number;
  private last = performance.now();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  /** Charges one message; returns 0, or the milliseconds until the bucket is out of debt. */
  take(): number {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond) - 1;
    this.last = now;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.perSecond) * 1000);
  }
}
