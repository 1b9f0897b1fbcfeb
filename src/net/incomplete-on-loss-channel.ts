import { IncompleteSyncError } from "../util/errors.ts";
import type { RecordParts } from "../util/record-parts.ts";
import type { RecordChannel } from "./record-channel.ts";

/**
 * The client's view of its connection: a transport failure (reset, truncation, idle timeout,
 * forged record) becomes an IncompleteSyncError, which the CLI reports as "interrupted: rerun
 * the same command to complete it" (the destination is still whole: spec §8). A failure after COMMIT_OK cannot happen
 * through here: the session has finished reading by then.
 */
export class IncompleteOnLossChannel implements RecordChannel {
  #inner: RecordChannel;
  #peer: string;

  constructor(inner: RecordChannel, options: { peer: string }) {
    this.#inner = inner;
    this.#peer = options.peer;
  }

  #wrap(e: unknown): never {
    if (e instanceof IncompleteSyncError) throw e;
    // On the client's side the peer is the listener: "the peer sent nothing" reads as who it is.
    const why = e instanceof Error
      ? e.message.replace(/^Cannot (use the connection|read from the peer): /, "").replace(/^the peer\b/, "the listener")
      : String(e);
    throw new IncompleteSyncError(`Lost the connection to ${this.#peer} before the sync was committed: ${why}`, { cause: e });
  }

  send(record: RecordParts): Promise<void> {
    return this.#inner.send(record).catch((e) => this.#wrap(e));
  }

  receive(): Promise<Uint8Array | null> {
    return this.#inner.receive().catch((e) => this.#wrap(e));
  }

  sendBacklog(): number {
    return this.#inner.sendBacklog?.() ?? 0;
  }

  get inProcess(): boolean | undefined {
    return this.#inner.inProcess;
  }

  close(reason?: Error): void {
    this.#inner.close(reason);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#inner[Symbol.asyncDispose]();
  }
}
