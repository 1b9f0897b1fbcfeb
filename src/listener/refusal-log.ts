/**
 * Log lines about refused connections, which anyone who can reach the port can cause: at most
 * `perWindow` lines per window (one second by default). Beyond that each refusal is only
 * counted, by source, and when the window ends one line per source says how many more were
 * refused ("N more refused from X in the last T s"), for the `maxSummaries` busiest sources,
 * then one line for all the others.
 *
 * Invariant: at most perWindow + maxSummaries + 1 lines per window, whatever the load.
 */
export interface RefusalLogOptions {
  perWindow?: number;
  windowMs?: number;
  maxSummaries?: number;
}

export class RefusalLog {
  #log: (line: string) => void;
  #perWindow: number;
  #windowMs: number;
  #maxSummaries: number;
  #windowStart = 0;
  #logged = 0;
  #suppressed = new Map<string, number>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(log: (line: string) => void, options: RefusalLogOptions = {}) {
    this.#log = log;
    this.#perWindow = options.perWindow ?? 5;
    this.#windowMs = options.windowMs ?? 1000;
    this.#maxSummaries = options.maxSummaries ?? 4;
  }

  /** One refusal from `source` (an address prefix or a key); `line` is logged if the window has room. */
  refused(source: string, line: string): void {
    if (this.#timer === undefined) {
      this.#windowStart = Date.now();
      this.#logged = 0;
      this.#timer = setTimeout(() => this.flush(), this.#windowMs);
      (this.#timer as { unref?: () => void }).unref?.();
    }
    if (this.#logged < this.#perWindow) {
      this.#logged++;
      this.#log(line);
      return;
    }
    this.#suppressed.set(source, (this.#suppressed.get(source) ?? 0) + 1);
  }

  /** Ends the window now: writes the summary lines of what was only counted. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#suppressed.size === 0) return;
    const seconds = (Math.max(0, Date.now() - this.#windowStart) / 1000).toFixed(1);
    const counts = [...this.#suppressed].sort((a, b) => b[1] - a[1]);
    this.#suppressed.clear();
    for (const [source, n] of counts.slice(0, this.#maxSummaries)) {
      this.#log(`${n} more refused from ${source} in the last ${seconds} s`);
    }
    const rest = counts.slice(this.#maxSummaries);
    if (rest.length > 0) {
      const n = rest.reduce((sum, [, c]) => sum + c, 0);
      this.#log(`${n} more refused from ${rest.length} other sources in the last ${seconds} s`);
    }
  }
}
