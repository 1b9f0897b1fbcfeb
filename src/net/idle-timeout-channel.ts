import type { RecordChannel } from "./record-channel.ts";

/**
 * A RecordChannel that kills its inner channel when a receive() waits longer than
 * `timeoutMs` for a record. Time spent not waiting (the session busy with its own work)
 * never counts as idle.
 */
export class IdleTimeoutChannel implements RecordChannel {
  #inner: RecordChannel;
  #timeoutMs: number;

  constructor(inner: RecordChannel, options: { timeoutMs: number }) {
    this.#inner = inner;
    this.#timeoutMs = options.timeoutMs;
  }

  send(record: Uint8Array): Promise<void> {
    return this.#inner.send(record);
  }

  async receive(): Promise<Uint8Array | null> {
    const timer = setTimeout(() => {
      this.#inner.close(new Error(`the peer sent nothing for ${Math.round(this.#timeoutMs / 1000)} s (idle timeout)`));
    }, this.#timeoutMs);
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
