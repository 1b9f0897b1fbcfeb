/**
 * The client's side of a batch (spec "Batches (protocol 2)"): many files over one connected
 * RecordChannel, one handshake.
 *
 * 1. start(): BATCH (version BATCH_VERSION, slots wanted) → BATCH_OK (slots granted), or an
 *    ERROR (EBUSY: the listener is at its session caps; the caller may retry, as --wait does),
 *    or a closed connection: a listener that predates batches closes on the unknown type, and
 *    that is reported as such.
 * 2. sync(): runs runClient, unchanged, on a free slot (a SlotChannel), waiting for one while
 *    all granted slots are busy. A slot is free again once both sides ended its session. One
 *    file's failure (an ERROR, a changed source) fails that sync only; a violation or a lost
 *    connection fails the batch, every sync with it.
 * 3. list(), mkdir(), remove(), rmdir(): control requests on slot 0, each with its own cookie,
 *    answered ACK, LIST_ENTRIES … LAST, or ERROR (a RemoteError; the batch goes on).
 * 4. close(): waits for what runs, then END; the listener answers END once its slots are done.
 *
 * The idle timeout (`activity`, IdleTimeoutChannel's) counts only while something waits for
 * the listener: a request on slot 0, a file session's request, a slot waiting for the
 * listener's end; a batch that the caller leaves quiet between files is not idle.
 */
import { decodeBatch, decodeControl, encodeBatch, encodeControl } from "../../protocol/batch-codec.ts";
import type { ControlMessage, ControlRequest, TreeEntry } from "../../protocol/batch-messages.ts";
import { decode, ProtocolError } from "../../protocol/codec.ts";
import { BATCH_VERSION, MAX_LIST_ENTRIES, MAX_SLOTS, MessageCode } from "../../protocol/constants.ts";
import { DEFAULT_MAX_UNREAD_BYTES } from "../net/noise-record-channel.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import type { Storage } from "../storage/storage.ts";
import { asError, ErrnoError, RemoteError } from "../util/errors.ts";
import type { Activity } from "./client-connection.ts";
import { runClient, type SyncOptions, type SyncReport } from "./client-session.ts";
import { DEFAULT_BATCH_SLOTS } from "./session-limits.ts";
import { SlotMux } from "./slot-mux.ts";

export interface BatchStartOptions {
  /** File slots wanted (default DEFAULT_BATCH_SLOTS); the listener grants at most MAX_SLOTS. */
  slots?: number;
  /** The idle timeout's activity of the channel (IdleTimeoutChannel): see above. */
  activity?: Activity;
  /** The listener as messages name it ("backup:7070"). */
  peer?: string;
  /** Aborts the whole batch (Ctrl-C): every sync and request fails with its reason. */
  signal?: AbortSignal;
  /** Disposed once the batch is closed or disposed (the connection, when the batch owns it: dial-batch.ts). */
  owner?: AsyncDisposable;
}

type Pending = { request: ControlRequest["type"]; resolve: (m: ControlMessage) => void; reject: (e: Error) => void; entries?: TreeEntry[] };

export class BatchClient implements AsyncDisposable {
  #mux: SlotMux;
  #free: number[];
  #slotWaiters: ((slot: number) => void)[] = [];
  /** close() waiting for every slot to be free. */
  #allFree: (() => void) | undefined;
  #pending = new Map<number, Pending>();
  #nextCookie = 1;
  #waiting = 0;
  #activity: Activity | undefined;
  #running = new Set<Promise<unknown>>();
  #closed = false;
  #signal: AbortSignal | undefined;
  #onAbort: () => void;
  #owner: AsyncDisposable | undefined;
  /** The control stream's reader: ends at the listener's END or with the batch's failure. */
  #reader: Promise<void>;

  private constructor(mux: SlotMux, o: BatchStartOptions) {
    this.#mux = mux;
    this.#free = Array.from({ length: mux.granted }, (_, i) => i + 1);
    this.#activity = o.activity;
    this.#signal = o.signal;
    this.#owner = o.owner;
    this.#onAbort = () => mux.fail(asError(o.signal!.reason));
    o.signal?.addEventListener("abort", this.#onAbort, { once: true });
    this.#reader = this.#readControl();
  }

  /** Step 1 over a connected channel (the client's stack: client-channel.ts). */
  static async start(channel: RecordChannel, o: BatchStartOptions = {}): Promise<BatchClient> {
    const wanted = o.slots ?? DEFAULT_BATCH_SLOTS;
    if (!Number.isInteger(wanted) || wanted < 1 || wanted > 0xffff) throw new RangeError(`Cannot ask for ${wanted} slots`);
    const peer = o.peer ?? "the listener";
    const predates = (cause?: unknown) =>
      new ErrnoError(
        "EPROTO",
        `Cannot sync a folder with ${peer}: the listener closed the connection at the start of a batch; it predates folders (protocol ${BATCH_VERSION}): upgrade it`,
        { cause },
      );
    let reply: Uint8Array | null;
    try {
      // Nothing begun yet: the idle clock runs while the listener owes BATCH_OK.
      await channel.send(encodeBatch({ type: "BATCH", cookie: 0, version: BATCH_VERSION, slots: wanted }));
      reply = await channel.receive();
    } catch (e) {
      channel.close(asError(e));
      throw predates(e);
    }
    if (reply === null) {
      channel.close();
      throw predates();
    }
    try {
      if (reply.length >= 2 && ((reply[0] << 8) | reply[1]) === MessageCode.ERROR) {
        const m = decode(reply);
        if (m.type === "ERROR") throw new RemoteError(m.code, m.message);
      }
      const ok = decodeBatch(reply);
      if (ok.type !== "BATCH_OK") throw new ProtocolError(`${ok.type} from the listener`);
      if (ok.slots > wanted || ok.slots > MAX_SLOTS) throw new ProtocolError(`BATCH_OK grants ${ok.slots} slots; ${wanted} were asked for`);
      const mux = new SlotMux(channel, { granted: ok.slots, maxSlotBytes: DEFAULT_MAX_UNREAD_BYTES });
      o.activity?.begin(); // nothing waits for the listener now (#wait counts what does)
      return new BatchClient(mux, o);
    } catch (e) {
      if (e instanceof RemoteError) channel.close();
      else channel.close(asError(e));
      throw e;
    }
  }

  /** File slots the listener granted: at most this many syncs run at once. */
  get slots(): number {
    return this.#mux.granted;
  }

  /** The batch's failure (a violation, a lost connection), once it failed. */
  get failure(): Error | undefined {
    return this.#mux.failure;
  }

  /**
   * One file, exactly as runClient syncs it (`options.name` under the listener's root), on
   * the next free slot. `options.activity` is the batch's; `options.signal` aborts this file.
   */
  sync(local: Storage, options: Omit<SyncOptions, "activity"> & { mode: "push" | "pull" }): Promise<SyncReport> {
    return this.#track(this.#sync(local, options));
  }

  async #sync(local: Storage, options: Omit<SyncOptions, "activity"> & { mode: "push" | "pull" }): Promise<SyncReport> {
    this.#checkOpen();
    const slot = await this.#takeSlot();
    const channel = this.#mux.open(slot);
    // The session's own waits, then (after its end) the wait for the listener's end.
    let waiting = false;
    const part: Activity = {
      begin: () => {
        if (waiting) this.#wait(-1);
        waiting = false;
      },
      end: () => {
        if (!waiting) this.#wait(1);
        waiting = true;
      },
    };
    try {
      // No FLUSH by default: COMMIT makes the file durable anyway (one fsync and round trip less per file).
      return await runClient(channel, local, { flush: false, ...options, activity: part });
    } finally {
      channel.close();
      part.end();
      channel.freed.then(() => {
        part.begin();
        this.#releaseSlot(slot);
      });
    }
  }

  /** Every entry under `name` ("" for the listener's root), a folder before what it holds. */
  async list(name: string): Promise<TreeEntry[]> {
    const entries: TreeEntry[] = [];
    await this.#request({ type: "LIST", name }, entries);
    return entries;
  }

  /** Creates one folder (its parent must exist); an existing folder is no error. */
  async mkdir(name: string): Promise<void> {
    await this.#request({ type: "MKDIR", name });
  }

  /** Removes one regular file of the listener's (refused for a folder, a link, a file being written). */
  async remove(name: string): Promise<void> {
    await this.#request({ type: "REMOVE", name });
  }

  /** Removes one empty folder. */
  async rmdir(name: string): Promise<void> {
    await this.#request({ type: "RMDIR", name });
  }

  /** Waits for every sync and request, then ends the batch (END) and waits for the listener's. */
  async close(): Promise<void> {
    if (this.#closed) {
      await this.#reader;
      return;
    }
    this.#closed = true;
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
    // Each slot is free once the listener ended it too: END only then.
    while (this.#free.length < this.#mux.granted && this.#mux.failure === undefined) {
      await new Promise<void>((resolve) => this.#allFree = resolve);
    }
    this.#signal?.removeEventListener("abort", this.#onAbort);
    if (this.#mux.failure) {
      await this.#owner?.[Symbol.asyncDispose]();
      throw this.#mux.failure;
    }
    try {
      this.#mux.end();
      this.#wait(1); // the listener owes its END
      await this.#reader;
      await this.#mux.done;
      this.#wait(-1);
      if (this.#mux.failure) throw this.#mux.failure;
    } finally {
      await this.#owner?.[Symbol.asyncDispose]();
    }
  }

  /** close() when nothing runs; otherwise the batch is cut (every sync fails), then the owner is disposed. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#closed && this.#running.size === 0 && this.#mux.failure === undefined) {
      await this.close().catch(() => {});
      return;
    }
    this.#mux.fail(new Error("Cannot go on with the batch: it was closed"));
    await this.#reader.catch(() => {});
    await this.#owner?.[Symbol.asyncDispose]();
  }

  #checkOpen(): void {
    if (this.#mux.failure) throw this.#mux.failure;
    if (this.#closed) throw new Error("Cannot use the batch: it is closed");
  }

  #track<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(() => {}, () => {});
    this.#running.add(settled);
    settled.finally(() => this.#running.delete(settled));
    return p;
  }

  /** Counts what waits for the listener: 0 → 1 starts the idle clock, 1 → 0 stops it. */
  #wait(delta: 1 | -1): void {
    const before = this.#waiting;
    this.#waiting += delta;
    if (before === 0 && this.#waiting === 1) this.#activity?.end();
    else if (before === 1 && this.#waiting === 0) this.#activity?.begin();
  }

  async #takeSlot(): Promise<number> {
    const slot = this.#free.shift();
    if (slot !== undefined) return slot;
    const next = await new Promise<number>((resolve) => this.#slotWaiters.push(resolve));
    this.#checkOpen();
    if (next === 0) throw new Error("Cannot sync: the listener ended the batch");
    return next;
  }

  #releaseSlot(slot: number): void {
    const waiter = this.#slotWaiters.shift();
    if (waiter) waiter(slot);
    else this.#free.push(slot);
    const all = this.#allFree;
    this.#allFree = undefined;
    all?.();
  }

  #request(m: Omit<ControlRequest, "cookie">, entries?: TreeEntry[]): Promise<ControlMessage> {
    return this.#track((async () => {
      this.#checkOpen();
      const cookie = this.#nextCookie++;
      const reply = new Promise<ControlMessage>((resolve, reject) => {
        this.#pending.set(cookie, { request: m.type, resolve, reject, entries });
      });
      reply.catch(() => {}); // observed now: awaited below, unless the send fails first
      this.#wait(1);
      try {
        await this.#mux.control.send(encodeControl({ ...m, cookie } as ControlRequest));
        return await reply;
      } finally {
        this.#pending.delete(cookie);
        this.#wait(-1);
      }
    })());
  }

  async #readControl(): Promise<void> {
    try {
      for (;;) {
        const record = await this.#mux.control.receive();
        if (record === null) break;
        const m = decodeControl(record);
        const p = this.#pending.get(m.cookie);
        if (p === undefined) throw new ProtocolError(`${m.type} answers no pending control request (cookie ${m.cookie})`);
        switch (m.type) {
          case "ERROR":
            this.#pending.delete(m.cookie);
            p.reject(new RemoteError(m.code, m.message));
            break;
          case "ACK":
            if (p.request === "LIST") throw new ProtocolError("ACK is not a reply to LIST");
            this.#pending.delete(m.cookie);
            p.resolve(m);
            break;
          case "LIST_ENTRIES":
            if (p.request !== "LIST") throw new ProtocolError(`LIST_ENTRIES is not a reply to ${p.request}`);
            // The listener never sends more than MAX_LIST_ENTRIES (it answers EFBIG): more is a violation, not memory.
            if (p.entries!.length + m.entries.length > MAX_LIST_ENTRIES) throw new ProtocolError(`LIST_ENTRIES: more than ${MAX_LIST_ENTRIES} entries`);
            for (const e of m.entries) p.entries!.push(e);
            if (m.last) {
              this.#pending.delete(m.cookie);
              p.resolve(m);
            }
            break;
          case "LIST":
          case "MKDIR":
          case "REMOVE":
          case "RMDIR":
            throw new ProtocolError(`${m.type} from the listener`);
          default:
            throw new ProtocolError(`unhandled ${(m satisfies never as ControlMessage).type}`);
        }
      }
      if (this.#pending.size > 0) throw new ProtocolError(`the listener ended the batch with ${this.#pending.size} control requests unanswered`);
    } catch (e) {
      this.#mux.fail(asError(e));
    } finally {
      const failure = this.#mux.failure ?? new Error("Cannot go on with the batch: the listener ended it");
      for (const p of this.#pending.values()) p.reject(failure);
      this.#pending.clear();
      for (const w of this.#slotWaiters.splice(0)) w(0);
      const all = this.#allFree;
      this.#allFree = undefined;
      all?.();
    }
  }
}
