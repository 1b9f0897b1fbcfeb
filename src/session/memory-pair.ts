/**
 * Two RecordChannels joined in memory: what one sends, the other receives. `ssync sync`
 * runs the client and the server over it, so the local path speaks the network protocol.
 *
 * Invariant: each direction buffers at most `maxBytes` (or one record larger than that);
 * send() waits for room. A record sent as one buffer is handed over as it is (no copy); one
 * sent as parts is copied once into one buffer, before send() resolves (the sender may reuse
 * parts after that: RecordChannel.send).
 */
import type { RecordChannel } from "../net/record-channel.ts";
import { keptRecord, type RecordParts } from "../util/record-parts.ts";

class Pipe {
  #queue: Uint8Array[] = [];
  #bytes = 0;
  #maxBytes: number;
  #ended = false;
  #error: Error | undefined;
  #readers: (() => void)[] = [];
  #writers: (() => void)[] = [];

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  async push(rec: Uint8Array): Promise<void> {
    while (!this.#ended && this.#bytes > 0 && this.#bytes + rec.length > this.#maxBytes) {
      await new Promise<void>((r) => this.#writers.push(r));
    }
    if (this.#ended) throw this.#error ?? new Error("channel closed");
    this.#queue.push(rec);
    this.#bytes += rec.length;
    this.#wake(this.#readers);
  }

  async shift(): Promise<Uint8Array | null> {
    while (this.#queue.length === 0) {
      if (this.#ended) {
        if (this.#error) throw this.#error;
        return null;
      }
      await new Promise<void>((r) => this.#readers.push(r));
    }
    const rec = this.#queue.shift()!;
    this.#bytes -= rec.length;
    this.#wake(this.#writers);
    return rec;
  }

  end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    if (error) this.#queue = [];
    this.#wake(this.#readers);
    this.#wake(this.#writers);
  }

  #wake(list: (() => void)[]): void {
    for (const w of list.splice(0)) w();
  }
}

class MemoryChannel implements RecordChannel {
  #in: Pipe;
  #out: Pipe;

  constructor(incoming: Pipe, outgoing: Pipe) {
    this.#in = incoming;
    this.#out = outgoing;
  }

  send(record: RecordParts): Promise<void> {
    return this.#out.push(keptRecord(record));
  }

  receive(): Promise<Uint8Array | null> {
    return this.#in.shift();
  }

  /** Orderly: the peer reads what was sent, then null. With a reason: both directions fail. */
  close(reason?: Error): void {
    this.#out.end(reason);
    if (reason) this.#in.end(reason);
    else this.#in.end();
  }

  /** Both sides share this process (RecordChannel.inProcess). */
  readonly inProcess = true;

  /** No link: memory is never the bottleneck worth compressing for. */
  sendBacklog(): number {
    return 0;
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

export function memoryPair(options: { maxBytes?: number } = {}): [RecordChannel, RecordChannel] {
  const max = options.maxBytes ?? 16 << 20;
  const a = new Pipe(max);
  const b = new Pipe(max);
  return [new MemoryChannel(a, b), new MemoryChannel(b, a)];
}
