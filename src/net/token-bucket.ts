/**
 * A token bucket counted in bytes (--bwlimit): it gains `bytesPerSecond` per second and saves
 * up at most `burst`. A record is never split, so take() may overdraw it; whoever spends next
 * waits until it is out of debt (waitMs() is 0). Over any interval of T seconds, then, the
 * bytes taken are at most burst + bytesPerSecond·T + the one take that overdrew it.
 *
 * Invariants: the level never exceeds `burst`; only take() lowers it; waitMs() is 0 exactly
 * when the level is ≥ 0. One bucket may be shared (the listener's, across its sessions).
 */
export class TokenBucket {
  readonly bytesPerSecond: number;
  readonly burst: number;
  #perMs: number;
  #level: number;
  #at: number;
  #now: () => number;

  /** `burst` defaults to an eighth of a second's worth; the bucket starts full. */
  constructor(options: { bytesPerSecond: number; burst?: number; now?: () => number }) {
    const { bytesPerSecond } = options;
    const burst = options.burst ?? bytesPerSecond / 8;
    if (!(Number.isFinite(bytesPerSecond) && bytesPerSecond > 0) || !(Number.isFinite(burst) && burst > 0)) {
      throw new RangeError(`Cannot make a token bucket of ${bytesPerSecond} bytes/s, burst ${burst}: both must be positive`);
    }
    this.bytesPerSecond = bytesPerSecond;
    this.burst = burst;
    this.#perMs = bytesPerSecond / 1000;
    this.#now = options.now ?? (() => performance.now());
    this.#at = this.#now();
    this.#level = burst;
  }

  #refill(): number {
    const now = this.#now();
    this.#level = Math.min(this.burst, this.#level + Math.max(0, now - this.#at) * this.#perMs);
    this.#at = now;
    return this.#level;
  }

  /** Spends `bytes`, into debt if need be. */
  take(bytes: number): void {
    this.#level = this.#refill() - bytes;
  }

  /** Milliseconds until the bucket is out of debt: 0 when it is now. */
  waitMs(): number {
    const level = this.#refill();
    return level >= 0 ? 0 : Math.ceil(-level / this.#perMs);
  }
}
