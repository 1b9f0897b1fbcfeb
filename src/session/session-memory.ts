/**
 * The large buffers one server session holds, counted before they are made: against the
 * session's own ByteWindow (SESSION_BUFFER_BYTES) and, for the transient ones (job results
 * waiting to be sent, DATA waiting to be written), also against an optional listener-wide
 * ByteWindow that every session of one listener shares.
 *
 * Invariants:
 * - hold(n) waits until n bytes fit in the session's window, then (shared) in its batch's
 *   (a batch's slots share one, spec "Batches") and in the listener's; waiters are served in
 *   call order, and the session's signal rejects them. Only shared holds (released by local
 *   work or by the peer reading, never by a record still to come) wait for other sessions.
 * - Every Hold gives its bytes back exactly once: release() (or shrink() in parts), or
 *   dispose() at the session's end, which releases every hold still out, so a session that
 *   ends in any way never leaks the listener's budget. Releases after dispose() do nothing.
 */
import type { ByteWindow } from "../util/byte-window.ts";

export interface Hold {
  /** Bytes still held. */
  readonly bytes: number;
  /** Gives back all but `bytes` of what is held (no-op when it holds no more). */
  shrink(bytes: number): void;
  /** Gives back everything; idempotent. */
  release(): void;
}

export class SessionMemory {
  #own: ByteWindow;
  #shared: ByteWindow | undefined;
  #batch: ByteWindow | undefined;
  #signal: AbortSignal;
  #out = new Set<SessionHold>();
  #disposed = false;

  constructor(options: { own: ByteWindow; shared?: ByteWindow; batch?: ByteWindow; signal: AbortSignal }) {
    this.#own = options.own;
    this.#shared = options.shared;
    this.#batch = options.batch;
    this.#signal = options.signal;
  }

  /** Waits until `bytes` fit (in the listener's window too when `shared`); resolves to their Hold. */
  async hold(bytes: number, options: { shared: boolean }): Promise<Hold> {
    const windows = [this.#own, ...(options.shared ? [this.#batch, this.#shared] : [])].filter((w) => w !== undefined);
    const taken: ByteWindow[] = [];
    try {
      for (const w of windows) {
        await w.acquire(bytes, this.#signal);
        taken.push(w);
      }
    } catch (e) {
      for (const w of taken) w.release(bytes);
      throw e;
    }
    const hold = new SessionHold(bytes, (n) => {
      for (const w of taken) w.release(n);
    }, () => this.#out.delete(hold));
    if (this.#disposed) {
      hold.release();
      throw new Error("Cannot hold memory: the session has ended");
    }
    this.#out.add(hold);
    return hold;
  }

  /** The session's end: gives back every hold still out. */
  dispose(): void {
    this.#disposed = true;
    for (const h of [...this.#out]) h.release();
  }
}

class SessionHold implements Hold {
  #bytes: number;
  #give: (n: number) => void;
  #done: () => void;

  constructor(bytes: number, give: (n: number) => void, done: () => void) {
    this.#bytes = bytes;
    this.#give = give;
    this.#done = done;
  }

  get bytes(): number {
    return this.#bytes;
  }

  shrink(bytes: number): void {
    const n = this.#bytes - Math.max(0, bytes);
    if (n <= 0) return;
    this.#bytes -= n;
    this.#give(n);
    if (this.#bytes === 0) this.#done();
  }

  release(): void {
    this.shrink(0);
    this.#done();
  }
}
