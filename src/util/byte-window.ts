/**
 * Back-pressure counted in bytes: acquire(n) waits until `n` more bytes fit under the limit.
 * A single acquisition larger than the limit is admitted alone, so nothing deadlocks.
 * Invariants: used ≤ limit, except while one oversized acquisition holds the window alone;
 * once `signal` is aborted, acquire rejects at once (also when called after the abort), so
 * a failed session never waits on bytes that will not be released.
 */
export class ByteWindow {
  #limit: number;
  #used = 0;
  #waiters: { n: number; resolve: () => void }[] = [];

  constructor(limit: number) {
    this.#limit = limit;
  }

  acquire(n: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#waiters.length === 0 && this.#fits(n)) {
      this.#used += n;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal!.reason);
        this.#admit();
      };
      const w = {
        n,
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.#waiters.push(w);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  release(n: number): void {
    this.#used -= n;
    this.#admit();
  }

  /** Admits waiters in order while the first one fits. */
  #admit(): void {
    while (this.#waiters.length > 0 && this.#fits(this.#waiters[0].n)) {
      const w = this.#waiters.shift()!;
      this.#used += w.n;
      w.resolve();
    }
  }

  #fits(n: number): boolean {
    return this.#used === 0 || this.#used + n <= this.#limit;
  }
}
