/**
 * I/O depth without threads: the kernel is asked to start reading (posix_fadvise WILLNEED)
 * the data extents ahead of where the engine reads, so a cold disk has many requests in
 * flight while the workers hash what is already in the page cache. A worker's pread then
 * finds its pages read or in flight instead of issuing one synchronous 1 MiB read at a time.
 *
 * This thread only plans: it lists the data extents ahead (advance) and hands the pieces to
 * the next job that starts on a worker (take; WorkerPool.onWorker: a small job runs on the
 * calling thread and carries none); the worker running that job gives the advice before its
 * own read (run-job.ts), since the advice costs the kernel's page allocation and I/O
 * submission (~0.4 ms per MiB here), which belongs on the workers, not on the session's thread.
 *
 * Invariants:
 * - Only data extents are planned (holes cost nothing to read), at most LEAD_BYTES of data
 *   beyond the furthest offset the engine said it reached, and each byte at most once: the
 *   page cache the advice fills is bounded by LEAD_BYTES plus what the engine reads anyway.
 * - Advice is a hint: without FFI, or when the kernel refuses it, reads work as before.
 *   No failure here fails a sync; advance() never throws and its work is observed.
 * - Planning is serialised: one at a time; later calls only raise the target.
 */
import { type ByteRange, type Libc, libc as ffiLibc, POSIX_FADV_WILLNEED } from "../platform/libc.ts";
import type { LentFile, Storage } from "../storage/storage.ts";
import { clipExtents } from "./ranges.ts";

/** Data bytes advised ahead of the reader: a few dozen milliseconds of a fast SSD. */
export const LEAD_BYTES = 64 * 1024 * 1024;
/** Advice resumes once this many data bytes of the lead were read (one extent query, a few fadvise calls). */
const STEP_BYTES = 8 * 1024 * 1024;
/** Most apparent bytes whose extents are fetched at once while looking for data ahead. */
const SCAN_WINDOW = 4 * 2 ** 30;
/** Largest piece advised in one call. */
const PIECE_BYTES = 2 * 1024 * 1024;
/** Most pieces one job carries. */
const PIECES_PER_JOB = 16;

/** Gives the advice a job carries, through the descriptor lent to it; false once the kernel refused. */
export function giveAdvice(file: LentFile, pieces: readonly ByteRange[] | undefined, c: Libc | null = ffiLibc): boolean {
  if (!pieces || c === null) return true;
  for (const p of pieces) if (c.fadviseRange(file.fd, p, POSIX_FADV_WILLNEED) !== 0) return false;
  return true;
}

export class ReadAhead {
  readonly #store: Storage;
  readonly #libc: Libc | null;
  /** Everything below this offset was planned, is a hole, or was passed by the reader. */
  #advisedTo = 0;
  /** The furthest offset the reader said it reached. */
  #reached = 0;
  /** Planned pieces not yet passed by the reader (the lead's count), ascending; `#head` is the first live one. */
  #pieces: { end: number; length: number }[] = [];
  #head = 0;
  /** Data bytes of the live pieces. */
  #ahead = 0;
  /** Planned pieces no job carried yet, ascending. */
  #ready: ByteRange[] = [];
  #running: Promise<void> | undefined;
  #off = false;
  /** Extents listed ahead and not yet passed (ascending, below #listedTo; `#listedHead` is the first live one): each extent is listed once. */
  #listed: { offset: number; length: number }[] = [];
  #listedHead = 0;
  #listedTo = 0;

  constructor(store: Storage, options: { libc?: Libc | null } = {}) {
    this.#store = store;
    this.#libc = options.libc === undefined ? ffiLibc : options.libc;
    if (this.#libc === null) this.#off = true;
  }

  /** The reader is at `offset` now: make sure LEAD_BYTES of data after it are being read. */
  advance(offset: number): void {
    if (this.#off || offset < this.#reached) return;
    this.#reached = offset;
    while (this.#head < this.#pieces.length && this.#pieces[this.#head].end <= offset) this.#ahead -= this.#pieces[this.#head++].length;
    if (this.#head > 1024) {
      this.#pieces = this.#pieces.slice(this.#head);
      this.#head = 0;
    }
    if (this.#running || this.#ahead > LEAD_BYTES - STEP_BYTES) return;
    this.#running = this.#run().catch(() => {
      this.#off = true; // a store that cannot lend (closing) or list extents: no more hints
    }).finally(() => {
      this.#running = undefined;
    });
  }

  /** Pieces for the job about to start to advise (at most PIECES_PER_JOB), or undefined. */
  take(): ByteRange[] | undefined {
    if (this.#ready.length === 0) return undefined;
    // Pieces the reader passed already need no advice.
    const live = this.#ready.filter((p) => p.offset + p.length > this.#reached);
    this.#ready = live.slice(PIECES_PER_JOB);
    return live.length > 0 ? live.slice(0, PIECES_PER_JOB) : undefined;
  }

  /** Gives the advice planned so far from this thread, without a job to carry it (tests). */
  adviseNow(): void {
    const pieces = this.#ready.splice(0);
    if (pieces.length === 0 || this.#off) return;
    // deno-lint-ignore require-await
    void this.#store.lend(async (file) => {
      if (!giveAdvice(file, pieces, this.#libc)) this.#off = true;
    }).catch(() => {
      this.#off = true;
    });
  }

  /** Resolves once the planning in progress (if any) is done. */
  async settled(): Promise<void> {
    await this.#running;
  }

  async #run(): Promise<void> {
    const size = this.#store.size;
    // Extents are listed just far enough to fill the lead: twice the bytes wanted at first,
    // twice as far again after a round that found too little (holes), up to SCAN_WINDOW. A
    // window listed whole on every round cost ~0.7 s of lseek on this thread for an image of
    // 780 extents (every extent to the window's end, every 8 MiB of data read).
    let window = 0;
    // Bounded: each round advises at least one piece or moves #advisedTo by a whole window.
    for (let round = 0; round < 4096 && !this.#off && this.#ahead < LEAD_BYTES; round++) {
      const at = Math.max(this.#advisedTo, this.#reached);
      if (at >= size) return;
      let budget = LEAD_BYTES - this.#ahead;
      window = Math.min(SCAN_WINDOW, Math.max(window * 2, 2 * budget));
      const windowEnd = Math.min(size, at + window);
      const pieces: { offset: number; length: number }[] = [];
      let cut = windowEnd;
      for (const e of await this.#extents(at, windowEnd)) {
        for (let o = 0; o < e.length && budget > 0; o += PIECE_BYTES) {
          const length = Math.min(PIECE_BYTES, e.length - o, budget);
          pieces.push({ offset: e.offset + o, length });
          budget -= length;
          cut = e.offset + o + length;
        }
        if (budget <= 0) break;
      }
      if (budget > 0) cut = windowEnd; // the whole window was planned
      else window = 0; // filled: the next round starts small again
      this.#ready.push(...pieces);
      for (const p of pieces) {
        this.#pieces.push({ end: p.offset + p.length, length: p.length });
        this.#ahead += p.length;
      }
      this.#advisedTo = cut;
    }
  }

  /**
   * The data extents of [at, end), clipped to it: from those listed before, listing only what
   * lies beyond (a round asks again from where the last one's budget ran out, often mid-way in
   * a window it listed). A stale list only misguides the hints: reads list for themselves.
   */
  async #extents(at: number, end: number): Promise<{ offset: number; length: number }[]> {
    if (this.#listedTo < end) {
      const from = Math.max(this.#listedTo, at);
      const more = await this.#store.dataExtents(from, end);
      for (const e of more) this.#listed.push(e);
      this.#listedTo = end;
    }
    while (this.#listedHead < this.#listed.length && this.#listed[this.#listedHead].offset + this.#listed[this.#listedHead].length <= at) this.#listedHead++;
    if (this.#listedHead > 1024) {
      this.#listed = this.#listed.slice(this.#listedHead);
      this.#listedHead = 0;
    }
    return clipExtents(this.#listed, this.#listedHead, { start: at, end });
  }
}
