import { RECORD_WORD_SIZE, TAG_SIZE } from "../../protocol/constants.ts";
import { type RecordParts, recordLength } from "../util/record-parts.ts";
import { DEFAULT_MAX_UNSENT_BYTES } from "./noise-record-channel.ts";
import type { RecordChannel } from "./record-channel.ts";
import type { TokenBucket } from "./token-bucket.ts";

/** Bytes a record takes on the wire beyond its plaintext: the record word and the AEAD tag (spec §2). */
export const RECORD_OVERHEAD = RECORD_WORD_SIZE + TAG_SIZE;

/**
 * A RecordChannel whose records pass token buckets (--bwlimit): `send` meters what we send,
 * `receive` what we read. Each record is charged its bytes on the wire (RECORD_OVERHEAD
 * included) and passes whole, once its bucket is out of debt.
 *
 * - Sending: a record that cannot pass now waits here, in order, unsealed; send() resolves
 *   once the inner channel accepted it. Nothing is queued that the caller did not hand over
 *   and is not awaiting: the queue is bounded by the session's own windows (requests and
 *   bytes in flight), as the inner channel's is.
 * - Receiving: after a record is read, the next is not asked of the inner channel before
 *   the bucket is out of debt. What the peer sends meanwhile stays in the inner channel's
 *   bounded read queue, then in the kernel's buffers, and TCP's flow control slows the peer
 *   down: no protocol change, and the peer's queue backs up, so its compression policy sees
 *   the link as the bottleneck.
 *
 * Idle timeout (wrap an IdleTimeoutChannel, pass its `activity`): the waits are ours, not
 * the peer's. A receive waits for its bucket before it asks the inner channel, so the idle
 * clock does not run meanwhile; while records wait to be sent, `activity` is begun, so a
 * peer that has nothing to answer yet (our request still waits here) is not idle either.
 *
 * sendBacklog(): the inner channel's plus the bytes waiting here, counted as the encrypted
 * channel counts its unsent bytes (fractions of DEFAULT_MAX_UNSENT_BYTES): CompressPolicy sees
 * the limit as it would see a link of that rate. Link-bound, the session's window fills this
 * queue (fill ≥ 1: compress, harder while it stays full); CPU-bound, it stays short and the
 * policy backs off.
 * close(reason) rejects the records waiting here; close() and dispose hand them to the inner
 * channel first (an orderly end sends everything; it is never throttled).
 */
export class RateLimitedChannel implements RecordChannel {
  #inner: RecordChannel;
  #send: TokenBucket | undefined;
  #receive: TokenBucket | undefined;
  #activity: { begin(): void; end(): void } | undefined;

  #queue: { record: RecordParts; bytes: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  #queuedBytes = 0;
  #sendTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set by close(reason): later sends reject with it. */
  #failure: Error | undefined;

  /** The receive in progress: receives run one after the other. */
  #receiving: Promise<unknown> = Promise.resolve();
  /** Ends the current wait for the receive bucket early (close). */
  #wake: (() => void) | undefined;

  constructor(
    inner: RecordChannel,
    options: { send?: TokenBucket; receive?: TokenBucket; activity?: { begin(): void; end(): void } },
  ) {
    this.#inner = inner;
    this.#send = options.send;
    this.#receive = options.receive;
    this.#activity = options.activity;
  }

  send(record: RecordParts): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    const bucket = this.#send;
    if (bucket === undefined) return this.#inner.send(record);
    const bytes = recordLength(record) + RECORD_OVERHEAD;
    if (this.#queue.length === 0 && bucket.waitMs() === 0) {
      bucket.take(bytes);
      return this.#inner.send(record);
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ record, bytes, resolve, reject });
      this.#queuedBytes += bytes;
      if (this.#queue.length === 1) {
        this.#activity?.begin();
        this.#arm();
      }
    });
  }

  #arm(): void {
    this.#sendTimer = setTimeout(() => this.#pass(), this.#send!.waitMs());
  }

  /** Passes waiting records on, in order, while the bucket lets them; re-arms for the rest. */
  #pass(): void {
    this.#sendTimer = undefined;
    const bucket = this.#send!;
    while (this.#queue.length > 0 && bucket.waitMs() === 0) {
      const s = this.#queue.shift()!;
      this.#queuedBytes -= s.bytes;
      bucket.take(s.bytes);
      this.#inner.send(s.record).then(s.resolve, s.reject);
    }
    if (this.#queue.length > 0) this.#arm();
    else this.#activity?.end();
  }

  /** Hands every waiting record to the inner channel at once (an orderly end). */
  #flush(): void {
    clearTimeout(this.#sendTimer);
    this.#sendTimer = undefined;
    if (this.#queue.length === 0) return;
    this.#queuedBytes = 0;
    for (const s of this.#queue.splice(0)) this.#inner.send(s.record).then(s.resolve, s.reject);
    this.#activity?.end();
  }

  receive(): Promise<Uint8Array | null> {
    const turn = this.#receiving.then(() => this.#receiveOne());
    this.#receiving = turn.catch(() => {});
    return turn;
  }

  async #receiveOne(): Promise<Uint8Array | null> {
    const bucket = this.#receive;
    if (bucket === undefined) return this.#inner.receive();
    const ms = bucket.waitMs();
    if (ms > 0 && this.#failure === undefined) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, ms);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    const record = await this.#inner.receive();
    if (record !== null) bucket.take(record.length + RECORD_OVERHEAD);
    return record;
  }

  close(reason?: Error): void {
    if (reason === undefined) {
      this.#flush();
    } else {
      this.#failure ??= reason;
      clearTimeout(this.#sendTimer);
      this.#sendTimer = undefined;
      if (this.#queue.length > 0) {
        this.#queuedBytes = 0;
        for (const s of this.#queue.splice(0)) s.reject(reason);
        this.#activity?.end();
      }
    }
    this.#wake?.();
    this.#inner.close(reason);
  }

  sendBacklog(): number {
    return (this.#inner.sendBacklog?.() ?? 0) + this.#queuedBytes / DEFAULT_MAX_UNSENT_BYTES;
  }

  get inProcess(): boolean | undefined {
    return this.#inner.inProcess;
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#flush();
    this.#wake?.();
    return this.#inner[Symbol.asyncDispose]();
  }
}
