/**
 * A session's live counters, for whoever watches it (the CLI's progress line, the listener's
 * periodic log line): the session adds a range's length when the range is done, and the
 * watcher polls snapshot() on its own timer. Nothing is called per block.
 *
 * Invariant: bytesCompared ≤ bytesTotal; both are 0 until OPEN_OK fixed the size.
 */
import type { WireCounters } from "./wire-counters.ts";

export interface ProgressSnapshot {
  /** The final size (the source's); 0 until the session is open. */
  bytesTotal: number;
  /** Bytes of ranges compared and settled: their differences sent (push) or written (pull). */
  bytesCompared: number;
  /** Bytes that differed so far: sent (or received) as DATA or ZERO, in a dry run would be; a push destination: applied. */
  bytesChanged: number;
  /** Every record this side sent and received, headers included. */
  wireBytesSent: number;
  wireBytesReceived: number;
  /** Since the session was made. */
  elapsedSeconds: number;
  /** A folder sync (tree-progress.ts): files done (synced, skipped or failed) and to do. */
  filesDone?: number;
  filesTotal?: number;
}

/** What a progress watcher polls: a SessionProgress, or a folder sync's TreeProgress. */
export interface ProgressSource {
  readonly open: boolean;
  snapshot(): ProgressSnapshot;
}

export class SessionProgress {
  readonly #started = performance.now();
  #total = 0;
  #compared = 0;
  #wire: WireCounters | undefined;
  #changed: (() => number) | undefined;

  /** Whether the session is open (its size known). */
  get open(): boolean {
    return this.#wire !== undefined;
  }

  /**
   * The session is open: its final size, its wire counters, and how to read the bytes that
   * differed so far from the counters it keeps (read here, never written).
   */
  begin(o: { total: number; wire: WireCounters; changed: () => number }): void {
    this.#total = o.total;
    this.#wire = o.wire;
    this.#changed = o.changed;
  }

  /** A range of `length` bytes is done (each range is reported once). */
  rangeDone(length: number): void {
    this.#compared = Math.min(this.#total, this.#compared + length);
  }

  snapshot(): ProgressSnapshot {
    return {
      bytesTotal: this.#total,
      bytesCompared: this.#compared,
      bytesChanged: this.#changed?.() ?? 0,
      wireBytesSent: this.#wire?.bytesSent ?? 0,
      wireBytesReceived: this.#wire?.bytesReceived ?? 0,
      elapsedSeconds: (performance.now() - this.#started) / 1000,
    };
  }
}
