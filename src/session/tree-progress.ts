/**
 * Live counters of a folder sync for the progress line: the whole set's files and bytes,
 * made of the files done and the files in flight (each its own SessionProgress, polled).
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
  #sentDone = 0;
  #receivedDone = 0;
  #current = new Set<SessionProgress>();

  get open(): boolean {
    return this.#planned;
  }

  /** The first walk counted `files` files of `bytes` bytes to compare. */
  plan(o: { files: number; bytes: number }): void {
    this.#filesTotal = o.files;
    this.#bytesTotal = o.bytes;
    this.#planned = true;
  }

  /** A file's session begins; its counters show until fileDone names it. */
  startFile(p: SessionProgress): void {
    this.#current.add(p);
  }

  /** A file of `size` bytes is done (synced, skipped by the quick check, or failed); `p`: its session's counters. */
  fileDone(size: number, p?: SessionProgress): void {
    if (p !== undefined && this.#current.delete(p)) {
      const c = p.snapshot();
      this.#changedDone += c.bytesChanged;
      this.#sentDone += c.wireBytesSent;
      this.#receivedDone += c.wireBytesReceived;
    }
    this.#filesDone = Math.min(this.#filesTotal, this.#filesDone + 1);
    this.#bytesDone = Math.min(this.#bytesTotal, this.#bytesDone + size);
  }

  snapshot(): ProgressSnapshot {
    let compared = 0, changed = 0, sent = 0, received = 0;
    for (const p of this.#current) {
      const c = p.snapshot();
      compared += c.bytesCompared;
      changed += c.bytesChanged;
      sent += c.wireBytesSent;
      received += c.wireBytesReceived;
    }
    return {
      bytesTotal: this.#bytesTotal,
      bytesCompared: Math.min(this.#bytesTotal, this.#bytesDone + compared),
      bytesChanged: this.#changedDone + changed,
      wireBytesSent: this.#sentDone + sent,
      wireBytesReceived: this.#receivedDone + received,
      elapsedSeconds: (performance.now() - this.#started) / 1000,
      filesDone: this.#filesDone,
      filesTotal: this.#filesTotal,
    };
  }
}
