// One token bucket per key (a token, an address), in a map of bounded size: once it holds
// `maxKeys`, full buckets are forgotten, and if over half remain (a flood from as many addresses),
// all of them. A limit may reset; memory may not grow, and each new key costs O(1) amortised.
import { type Rate, TokenBucket } from "./token-bucket.ts";

/** `take` charges one, into debt if need be; `wait`: the milliseconds until one may be taken. */
export type Charges = { wait(): number; take(): void; refund(): void };

export class RateLimits {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    readonly rate: Rate,
    private readonly maxKeys = 10_000,
  ) {}

  /** Charges `key` one and returns 0 if it has one; else the milliseconds until it has, charging nothing. */
  tryTake(key: string, now = performance.now()): number {
    return this.bucket(key, now).tryTake(now);
  }

  /** One key's charges. */
  for(key: string): Charges {
    return {
      wait: () => this.wait(key),
      take: () => void this.bucket(key, performance.now()).take(),
      refund: () => this.buckets.get(key)?.refund(),
    };
  }

  /** The milliseconds until `key` may be charged, charging nothing. */
  wait(key: string, now = performance.now()): number {
    return this.buckets.get(key)?.wait(now) ?? 0;
  }

  get size(): number {
    return this.buckets.size;
  }

  private bucket(key: string, now: number): TokenBucket {
    let bucket = this.buckets.get(key);
    if (bucket) return bucket;
    if (this.buckets.size >= this.maxKeys) this.prune(now);
    bucket = new TokenBucket(this.rate, now);
    this.buckets.set(key, bucket);
    return bucket;
  }

  private prune(now: number): void {
    for (const [key, bucket] of this.buckets) if (bucket.full(now)) this.buckets.delete(key);
    if (this.buckets.size > this.maxKeys / 2) this.buckets.clear();
  }
}
