import type { RecordParts } from "../util/record-parts.ts";
import type { RecordChannel } from "./record-channel.ts";

/**
 * A RecordChannel that kills its inner channel when the peer stalls for `timeoutMs`:
 * - a receive() waits that long for a record;
 * - a send() waits that long (the peer reads nothing, so our sends stay blocked) while
 *   `sendProgress` (a counter of bytes the peer took, when given) does not move.
 * Time spent not waiting (the session busy with its own work) never counts as idle, and
 * neither does waiting for a record while `busy()` says a request is still being worked on
 * (an fsync of a large device may take longer than the timeout; the peer is waiting on us).
 *
 * `activity.ignoreLastRecord()` says the record just received was no activity (a dry run's
 * FLUSH, which does nothing): the idle period that record ended goes on, so the next
 * receive's deadline counts from where that period began. A peer that sends only such
 * records is closed after `timeoutMs` as if it sent nothing.
 */
export class IdleTimeoutChannel implements RecordChannel {
  #inner: RecordChannel;
  #timeoutMs: number;
  #sendProgress: (() => number) | undefined;
  #pendingSends = 0;
  #sendTimer: ReturnType<typeof setTimeout> | undefined;

  #busy = 0;
  /** When the idle period of the receive now waiting began (undefined: none waits). */
  #waitingSince: number | undefined;
  /** Re-arms the waiting receive's timer for a new start of its idle period. */
  #rearm: (() => void) | undefined;
  /** When the idle period that the last received record ended had begun. */
  #lastRecordIdleSince: number | undefined;
  /** Set by ignoreLastRecord(): the next receive's idle period began then. */
  #carriedSince: number | undefined;

  constructor(inner: RecordChannel, options: { timeoutMs: number; sendProgress?: () => number }) {
    this.#inner = inner;
    this.#timeoutMs = options.timeoutMs;
    this.#sendProgress = options.sendProgress;
  }

  /** Brackets work the peer is waiting on: while any is in progress, a quiet peer is not idle. */
  readonly activity = {
    begin: (): void => void this.#busy++,
    end: (): void => void this.#busy--,
    /** The record just received does not reset the idle clock (see above). */
    ignoreLastRecord: (): void => {
      const since = this.#lastRecordIdleSince;
      if (since === undefined) return;
      if (this.#waitingSince !== undefined) {
        // The next receive already waits: its idle period began before that record.
        if (since < this.#waitingSince) {
          this.#waitingSince = since;
          this.#rearm?.();
        }
      } else {
        this.#carriedSince = Math.min(since, this.#carriedSince ?? since);
      }
    },
  };

  async send(record: RecordParts): Promise<void> {
    const sent = this.#inner.send(record);
    if (++this.#pendingSends === 1) this.#armSendTimer();
    try {
      return await sent;
    } finally {
      if (--this.#pendingSends === 0) {
        clearTimeout(this.#sendTimer);
        this.#sendTimer = undefined;
      }
    }
  }

  #armSendTimer(): void {
    const progress = this.#sendProgress?.();
    this.#sendTimer = setTimeout(() => {
      if (this.#pendingSends === 0) return;
      if (progress !== undefined && this.#sendProgress?.() !== progress) return this.#armSendTimer();
      this.#inner.close(new Error(`the peer read nothing for ${Math.round(this.#timeoutMs / 1000)} s (idle timeout)`));
    }, this.#timeoutMs);
  }

  async receive(): Promise<Uint8Array | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const since = this.#carriedSince ?? Date.now();
    this.#carriedSince = undefined;
    this.#waitingSince = since;
    const expire = () => {
      if (this.#busy > 0) return arm(this.#timeoutMs);
      this.#inner.close(new Error(`the peer sent nothing for ${Math.round(this.#timeoutMs / 1000)} s (idle timeout)`));
    };
    const arm = (ms: number) => {
      clearTimeout(timer);
      timer = setTimeout(expire, Math.max(0, ms));
    };
    this.#rearm = () => arm(this.#waitingSince! + this.#timeoutMs - Date.now());
    this.#rearm();
    try {
      const record = await this.#inner.receive();
      this.#lastRecordIdleSince = this.#waitingSince;
      return record;
    } finally {
      clearTimeout(timer);
      this.#waitingSince = undefined;
      this.#rearm = undefined;
    }
  }

  close(reason?: Error): void {
    this.#inner.close(reason);
  }

  sendBacklog(): number {
    return this.#inner.sendBacklog?.() ?? 0;
  }

  get inProcess(): boolean | undefined {
    return this.#inner.inProcess;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#inner[Symbol.asyncDispose]();
  }
}
