import type { RecordChannel } from "./record-channel.ts";

/**
 * A RecordChannel that kills its inner channel when the peer stalls for `timeoutMs`:
 * - a receive() waits that long for a record;
 * - a send() waits that long (the peer reads nothing, so our sends stay blocked) while
 *   `sendProgress` (a counter of bytes the peer took, when given) does not move.
 * Time spent not waiting (the session busy with its own work) never counts as idle, and
 * neither does waiting for a record while `busy()` says a request is still being worked on
 * (an fsync of a large device may take longer than the timeout; the peer is waiting on us).
 */
export class IdleTimeoutChannel implements RecordChannel {
  #inner: RecordChannel;
  #timeoutMs: number;
  #sendProgress: (() => number) | undefined;
  #pendingSends = 0;
  #sendTimer: ReturnType<typeof setTimeout> | undefined;

  #busy = 0;

  constructor(inner: RecordChannel, options: { timeoutMs: number; sendProgress?: () => number }) {
    this.#inner = inner;
    this.#timeoutMs = options.timeoutMs;
    this.#sendProgress = options.sendProgress;
  }

  /** Brackets work the peer is waiting on: while any is in progress, a quiet peer is not idle. */
  readonly activity = {
    begin: (): void => void this.#busy++,
    end: (): void => void this.#busy--,
  };

  async send(record: Uint8Array): Promise<void> {
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
    const arm = () => {
      timer = setTimeout(() => {
        if (this.#busy > 0) return arm();
        this.#inner.close(new Error(`the peer sent nothing for ${Math.round(this.#timeoutMs / 1000)} s (idle timeout)`));
      }, this.#timeoutMs);
    };
    arm();
    try {
      return await this.#inner.receive();
    } finally {
      clearTimeout(timer);
    }
  }

  close(reason?: Error): void {
    this.#inner.close(reason);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#inner[Symbol.asyncDispose]();
  }
}
