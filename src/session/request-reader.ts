/**
 * Pull with refinement, the server: reads the client's records ahead of the requests the
 * session works on, so that a SUB_DIGESTS (the answer a refining READ_DIFF waits for) is never
 * stuck behind a request that waits for memory or a task slot — which that very READ_DIFF may
 * hold. Answers are handed over (`onAnswer`) as they arrive; requests queue in order.
 *
 * Invariants:
 * - Requests queued hold at most `maxBytes` of records (each counted by its record length);
 *   beyond that the reader stops reading (back-pressure), as the session did before. A client
 *   that fills it before answering only stalls itself (the idle timeout ends it).
 * - The first failure (a record that breaks the protocol, an answer that answers nothing, a
 *   lost channel) is told at once (onFailure) and is what next() throws from then on; the end
 *   of the records is null.
 */
import type { Message } from "../../protocol/messages.ts";
import { ByteWindow } from "../util/byte-window.ts";

export class RequestReader {
  #queue: { msg: Message; bytes: number }[] = [];
  #window: ByteWindow;
  #wake: (() => void) | undefined;
  #ended = false;
  #failure: unknown;
  #failed = false;

  constructor(
    receive: () => Promise<{ msg: Message; bytes: number } | null>,
    o: {
      maxBytes: number;
      onAnswer: (m: Message & { type: "SUB_DIGESTS" }) => void;
      onEnd: () => void;
      /** Told at once of the first failure (the session closes then, not when next() gets to it). */
      onFailure: (e: unknown) => void;
      signal: AbortSignal;
    },
  ) {
    this.#window = new ByteWindow(o.maxBytes);
    const pump = async () => {
      for (;;) {
        const r = await receive();
        if (r === null) {
          o.onEnd();
          return;
        }
        if (r.msg.type === "SUB_DIGESTS") {
          o.onAnswer(r.msg);
          continue;
        }
        await this.#window.acquire(Math.min(r.bytes, o.maxBytes), o.signal);
        this.#queue.push({ msg: r.msg, bytes: Math.min(r.bytes, o.maxBytes) });
        this.#notify();
      }
    };
    pump().then(() => {
      this.#ended = true;
      this.#notify();
    }, (e) => {
      this.#failed = true;
      this.#failure = e;
      this.#notify();
      o.onFailure(e);
    });
  }

  /** The next request in arrival order, or null once the client sent its last record. */
  async next(): Promise<Message | null> {
    for (;;) {
      const item = this.#queue.shift();
      if (item) {
        this.#window.release(item.bytes);
        return item.msg;
      }
      if (this.#failed) throw this.#failure;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }
}
