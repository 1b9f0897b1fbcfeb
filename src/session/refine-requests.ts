/**
 * Pull, the server (source): the REFINEs it sent inside READ_DIFF streams and waits on.
 *
 * Invariants:
 * - At most one REFINE per stream (cookie) is unanswered: its stream waits for the answer
 *   before it sends anything more, so the client's answers are bounded by what was asked.
 * - A SUB_DIGESTS is accepted only as the answer to the REFINE its cookie names, with the
 *   same offset and length; anything else is a ProtocolError (the session closes).
 * - The session's signal, or the end of the client's records, rejects every wait.
 */
import { ProtocolError } from "../../protocol/codec.ts";
import type { SubDigestsMessage } from "../../protocol/messages.ts";

interface Waiting {
  offset: number;
  length: number;
  resolve: (digests: Uint8Array) => void;
  reject: (e: unknown) => void;
}

export class RefineRequests {
  #waiting = new Map<number, Waiting>();
  #signal: AbortSignal;

  #ended: Error | undefined;

  constructor(signal: AbortSignal) {
    this.#signal = signal;
    signal.addEventListener("abort", () => this.end(signal.reason), { once: true });
  }

  /** No answer can come any more (the session aborted, or the client ended its side): every wait fails. */
  end(reason: unknown): void {
    this.#ended ??= reason instanceof Error ? reason : new Error(String(reason));
    for (const w of this.#waiting.values()) w.reject(this.#ended);
    this.#waiting.clear();
  }

  /** Registers the REFINE about to be sent on stream `cookie`; resolves to the sub-digests it gets. */
  expect(cookie: number, run: { offset: number; length: number }): Promise<Uint8Array> {
    if (this.#ended) return Promise.reject(this.#ended);
    if (this.#waiting.has(cookie)) throw new Error(`Cannot refine: stream ${cookie} already waits for sub-digests`);
    return new Promise((resolve, reject) => this.#waiting.set(cookie, { ...run, resolve, reject }));
  }

  /** A SUB_DIGESTS arrived: it must answer the REFINE its cookie waits on. */
  answer(m: SubDigestsMessage): void {
    const w = this.#waiting.get(m.cookie);
    if (!w) throw new ProtocolError(`SUB_DIGESTS (cookie ${m.cookie}) answers no REFINE`);
    if (w.offset !== m.offset || w.length !== m.length) {
      throw new ProtocolError(`SUB_DIGESTS [${m.offset}, ${m.offset + m.length}) does not answer REFINE [${w.offset}, ${w.offset + w.length})`);
    }
    this.#waiting.delete(m.cookie);
    w.resolve(m.digests);
  }
}
