/**
 * Live counters of a folder sync for the progress line: the whole set's files and bytes,
 * made of the files done and the one file in flight (its own SessionProgress, polled).
 *
 * Invariant: bytesCompared ≤ bytesTotal and filesDone ≤ filesTotal (the totals are counted
 * by a first walk; a tree that grows meanwhile is clamped, never shown past 100%).
 */
import type { ProgressSnapshot, SessionProgress } from "./session-progress.ts";

export class TreeProgress {
  readonly #started = performance.now();
  #planned = false;
  #filesTotal = 0;
  #bytesTotal = 0;
  #filesDone = 0;
  #bytesDone = 0;
  #changedDone = 0;
  #current: SessionProgress | undefined;

  get open(): boolean {
    return this.#planned;
  }

  /** The first walk counted `files` files of `bytes` bytes to compare. */
  plan(o: { files: number; bytes: number }): void {
    this.#filesTotal = o.files;
    this.#bytesTotal = o.bytes;
    this.#planned = true;
  }

  /** A file's session begins; its counters show until fileDone. */
  startFile(p: SessionProgress): void {
    this.#current = p;
  }

  /** A file of `size` bytes is done (synced, skipped by the quick check, or failed). */
  fileDone(size: number): void {
    this.#changedDone += this.#current?.snapshot().bytesChanged ?? 0;
    this.#current = undefined;
    this.#filesDone = Math.min(this.#filesTotal, this.#filesDone + 1);
    this.#bytesDone = Math.min(this.#bytesTotal, this.#bytesDone + size);
  }

  snapshot(): ProgressSnapshot {
    const c = this.#current?.snapshot();
    return {
      bytesTotal: this.#bytesTotal,
      bytesCompared: Math.min(this.#bytesTotal, this.#bytesDone + (c?.bytesCompared ?? 0)),
      bytesChanged: this.#changedDone + (c?.bytesChanged ?? 0),
      wireBytesSent: 0,
      wireBytesReceived: 0,
      elapsedSeconds: (performance.now() - this.#started) / 1000,
      filesDone: this.#filesDone,
      filesTotal: this.#filesTotal,
    };
  }
}
