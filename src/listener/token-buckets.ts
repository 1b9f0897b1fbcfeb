/**
 * Token buckets by key (the listener's: new handshakes per address prefix). Each bucket holds
 * at most `burst` tokens and gains `refillPerSecond` per second; take() spends one token from
 * every named bucket, or none when any is empty.
 *
 * Invariant: at most `maxEntries` buckets are kept. A full bucket is the same as none, so
 * full ones are dropped first; beyond that the oldest are dropped, which only ever gives a
 * key more tokens, never fewer (the caps on handshakes in progress still hold).
 */
export interface TokenBucketOptions {
  burst: number;
  refillPerSecond: number;
  maxEntries?: number;
  /** Milliseconds, monotonic (tests may pass their own clock). */
  now?: () => number;
}

export class TokenBuckets {
  #burst: number;
  #perMs: number;
  #maxEntries: number;
  #now: () => number;
  #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(options: TokenBucketOptions) {
    if (!(options.burst >= 1) || !(options.refillPerSecond > 0)) {
      throw new RangeError(`Cannot make token buckets of burst ${options.burst}, refill ${options.refillPerSecond}/s: both must be positive, burst at least 1`);
    }
    this.#burst = options.burst;
    this.#perMs = options.refillPerSecond / 1000;
    this.#maxEntries = options.maxEntries ?? 16384;
    this.#now = options.now ?? (() => performance.now());
  }

  #level(key: string, now: number): number {
    const b = this.#buckets.get(key);
    return b === undefined ? this.#burst : Math.min(this.#burst, b.tokens + (now - b.at) * this.#perMs);
  }

  /** Spends one token of each key's bucket, or none when one of them has less than one (named). */
  take(keys: readonly string[]): { taken: true } | { taken: false; empty: string } {
    const now = this.#now();
    const empty = keys.find((k) => this.#level(k, now) < 1);
    if (empty !== undefined) return { taken: false, empty };
    for (const k of keys) this.#set(k, this.#level(k, now) - 1, now);
    this.#trim(now);
    return { taken: true };
  }

  /** Gives back the token take() spent (a connection that proved to be welcome). */
  refund(keys: readonly string[]): void {
    const now = this.#now();
    for (const k of keys) {
      if (!this.#buckets.has(k)) continue;
      const level = Math.min(this.#burst, this.#level(k, now) + 1);
      if (level >= this.#burst) this.#buckets.delete(k);
      else this.#set(k, level, now);
    }
  }

  #set(key: string, tokens: number, at: number): void {
    const b = this.#buckets.get(key);
    if (b) {
      b.tokens = tokens;
      b.at = at;
    } else {
      this.#buckets.set(key, { tokens, at });
    }
  }

  /** Over maxEntries: down to three quarters of it, so the sweep's cost is spread. */
  #trim(now: number): void {
    if (this.#buckets.size <= this.#maxEntries) return;
    const target = Math.floor(this.#maxEntries * 0.75);
    for (const key of [...this.#buckets.keys()]) {
      if (this.#level(key, now) >= this.#burst) this.#buckets.delete(key);
    }
    for (const key of this.#buckets.keys()) {
      if (this.#buckets.size <= target) break;
      this.#buckets.delete(key);
    }
  }

  /** Buckets kept (tests). */
  get size(): number {
    return this.#buckets.size;
  }
}
