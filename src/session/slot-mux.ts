/**
 * The slots of a batch connection (spec "Batches (protocol 2)"), either side: after BATCH_OK
 * every record is `u16 slot ‖ message`; slot 0 is the control stream, slots 1 … granted carry
 * v1 sessions, each seen through a SlotChannel (a RecordChannel of that slot's messages), so
 * serveSession and runClient run on one unchanged.
 *
 * 1. One reader takes the connection's records in order and puts each on its slot's queue.
 *    A record of exactly the prefix ends its slot in that direction (as END ends a v1
 *    connection); the connection's END ends every slot and the control stream.
 * 2. Slot life: free → (server: the client's first record on it, which must be OPEN;
 *    client: open()) → busy → each side ends it once (close()) → free again once both have.
 *    Records that arrive after our own end and before the peer's are replies in flight:
 *    dropped. Server: after the client's OPEN and before its answer (OPEN_OK or ERROR), no
 *    other record may come on that slot (the client waits for OPEN_OK). Anything else (a slot not granted, a record after the peer's end, a second end,
 *    an end or a non-OPEN on a free slot, an end on slot 0, a record without its prefix) is a
 *    violation: the connection is closed, every slot with it.
 * 3. Bounds: each slot's queue holds at most `maxSlotBytes` (a record counts its length, at
 *    least RECORD_CHARGE bytes); beyond that the reader waits for that slot alone to drain
 *    (TCP back-pressure for the whole connection). Invariant (why this cannot deadlock an
 *    honest peer, spec "Batches"): a slot's session waits only for its own records, for local
 *    work, or for the peer to read; a pull slot's SUB_DIGESTS answers stay readable because an
 *    honest client never queues more than maxSlotBytes on a pull slot, and the server never
 *    mixes push and pull slots in one batch.
 * 4. close(reason) on a slot: a ProtocolError while the peer has not ended the slot is a
 *    violation and closes the connection; any other reason (a failed file) ends the slot in
 *    order, so one failing file does not stop the others.
 */
import { ProtocolError } from "../../protocol/codec.ts";
import { messageCode, slotEnd, slotMessage, slotOf, slotRecord } from "../../protocol/batch-codec.ts";
import { CONTROL_SLOT, MessageCode } from "../../protocol/constants.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import { asError } from "../util/errors.ts";
import type { RecordParts } from "../util/record-parts.ts";

/** What a queued record counts at least, so a flood of tiny records is bounded as well as big ones. */
export const RECORD_CHARGE = 64;

type Waiter = { resolve: (m: Uint8Array | null) => void; reject: (e: Error) => void };

export interface SlotMuxOptions {
  /** File slots 1 … granted. */
  granted: number;
  /** The server starts a session on a free slot when the client's OPEN arrives; the client never has this. */
  onStart?: (slot: number, channel: SlotChannel) => void;
  /** Bytes a slot's queue may hold before the reader waits for it. */
  maxSlotBytes: number;
}

export class SlotMux {
  #inner: RecordChannel;
  #options: SlotMuxOptions;
  #slots = new Map<number, SlotChannel>();
  #failure: Error | undefined;
  #ended = false;
  #drain: (() => void) | undefined;
  readonly control: SlotChannel;
  /** Settles when the reader stops: the peer's END (resolves) or the connection's failure (resolves too: see `failure`). */
  readonly done: Promise<void>;

  constructor(inner: RecordChannel, options: SlotMuxOptions) {
    this.#inner = inner;
    this.#options = options;
    this.control = new SlotChannel(this, CONTROL_SLOT);
    this.#slots.set(CONTROL_SLOT, this.control);
    this.done = this.#read();
  }

  get granted(): number {
    return this.#options.granted;
  }

  /** The connection's failure, once it failed. */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Client: starts a session on a free slot. */
  open(slot: number): SlotChannel {
    if (slot < 1 || slot > this.#options.granted) throw new RangeError(`slot ${slot} is not granted`);
    if (this.#slots.has(slot)) throw new Error(`Cannot open slot ${slot}: it is busy`);
    const channel = new SlotChannel(this, slot);
    if (this.#failure) channel.fail(this.#failure);
    else if (this.#ended) channel.peerEnd({ connection: true });
    this.#slots.set(slot, channel);
    return channel;
  }

  /** Kills the connection (a violation, a lost link, a stop): every slot fails with `e`. */
  fail(e: Error): void {
    if (this.#failure) return;
    this.#failure = e;
    this.#inner.close(e);
    for (const s of this.#slots.values()) s.fail(e);
    this.#wakeReader();
  }

  /** The orderly end of the connection (END), once every slot is done. */
  end(): void {
    this.#inner.close();
  }

  sendBacklog(): number {
    return this.#inner.sendBacklog?.() ?? 0;
  }

  /** @internal SlotChannel's send: the slot, then the message, in the connection's order. */
  sendOn(slot: number, message: RecordParts): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    return this.#inner.send(slotRecord(slot, message as Uint8Array | readonly Uint8Array[]));
  }

  /** @internal A slot's end in our direction: the prefix alone. */
  sendEnd(slot: number): void {
    if (this.#failure) return;
    this.#inner.send(slotEnd(slot)).catch((e) => this.fail(asError(e)));
  }

  /** @internal A slot both sides ended: free for a new session. */
  release(slot: number, channel: SlotChannel): void {
    if (this.#slots.get(slot) === channel) this.#slots.delete(slot);
  }

  /** @internal A slot's queue shrank: the reader may go on. */
  wakeReader(): void {
    this.#wakeReader();
  }

  #wakeReader(): void {
    const w = this.#drain;
    this.#drain = undefined;
    w?.();
  }

  async #read(): Promise<void> {
    try {
      for (;;) {
        const record = await this.#inner.receive();
        if (this.#failure) return;
        if (record === null) {
          this.#ended = true;
          for (const s of this.#slots.values()) s.peerEnd({ connection: true });
          return;
        }
        const slot = slotOf(record);
        const message = slotMessage(record);
        const channel = this.#route(slot, message);
        if (channel === undefined) continue;
        while (channel.queuedBytes > this.#options.maxSlotBytes && !this.#failure) {
          await new Promise<void>((resolve) => this.#drain = resolve);
        }
      }
    } catch (e) {
      this.fail(asError(e));
    }
  }

  /** The slot's channel after taking `message` (undefined: dropped). Throws ProtocolError for a violation. */
  #route(slot: number, message: Uint8Array): SlotChannel | undefined {
    if (slot > this.#options.granted) throw new ProtocolError(`a record on slot ${slot}; ${this.#options.granted} slots were granted`);
    let channel = this.#slots.get(slot);
    if (message.length === 0) {
      if (channel === undefined) throw new ProtocolError(`the end of slot ${slot}, which is free`);
      if (slot === CONTROL_SLOT) throw new ProtocolError("the end of the control stream (slot 0 never ends before the connection)");
      channel.peerEnd();
      return undefined;
    }
    if (channel === undefined) {
      if (this.#options.onStart === undefined) throw new ProtocolError(`a record on slot ${slot}, where no session was opened`);
      if (messageCode(message) !== MessageCode.OPEN) throw new ProtocolError(`a session on slot ${slot} must begin with OPEN`);
      channel = new SlotChannel(this, slot, { started: true });
      this.#slots.set(slot, channel);
      channel.take(message);
      channel.awaitAnswer();
      this.#options.onStart(slot, channel);
      return channel;
    }
    return channel.take(message) ? channel : undefined;
  }
}

/**
 * One slot of a batch as a RecordChannel: send prepends the slot, receive yields its
 * messages, close() ends the slot in our direction (SLOT_PREFIX_SIZE bytes alone).
 */
export class SlotChannel implements RecordChannel {
  readonly slot: number;
  #mux: SlotMux;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #waiters: Waiter[] = [];
  #weEnded = false;
  #peerEnded = false;
  #failure: Error | undefined;
  /** A record of this session crossed the wire (the peer's OPEN, or our first send): only then is there a slot to end. */
  #started: boolean;
  /**
   * Server: the peer's OPEN is here and this side has not answered it (OPEN_OK or ERROR) yet.
   * Any other record of the peer now is a violation: a client waits for OPEN_OK, so nothing
   * ever queues behind a session that has not started (one held at the ModeGate), and the
   * reader never waits for a slot whose session takes nothing.
   */
  #awaitingAnswer = false;
  #freed!: () => void;
  /** Resolves once both sides ended the slot (or the connection failed): it may carry a new session. */
  readonly freed: Promise<void>;

  constructor(mux: SlotMux, slot: number, o: { started?: boolean } = {}) {
    this.#mux = mux;
    this.slot = slot;
    this.#started = o.started === true || slot === CONTROL_SLOT;
    this.freed = new Promise((resolve) => this.#freed = resolve);
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** The peer ended the slot (its direction). */
  get peerEnded(): boolean {
    return this.#peerEnded;
  }

  send(record: RecordParts): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#weEnded) return Promise.reject(new Error(`Cannot send on slot ${this.slot}: its session has ended`));
    this.#started = true;
    this.#awaitingAnswer = false;
    return this.#mux.sendOn(this.slot, record);
  }

  receive(): Promise<Uint8Array | null> {
    if (this.#queue.length > 0) {
      const m = this.#queue.shift()!;
      this.#queuedBytes -= Math.max(m.length, RECORD_CHARGE);
      this.#mux.wakeReader();
      return Promise.resolve(m);
    }
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#peerEnded || this.#weEnded) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  sendBacklog(): number {
    return this.#mux.sendBacklog();
  }

  /**
   * close(): ends the slot in our direction. close(reason): a ProtocolError the peer's
   * records caused (it has not ended the slot) closes the whole connection; anything else
   * ends the slot as close() does. Idempotent.
   */
  close(reason?: Error): void {
    if (reason instanceof ProtocolError && !this.#peerEnded) {
      this.#mux.fail(reason);
      return;
    }
    if (this.slot === CONTROL_SLOT) {
      if (reason !== undefined) this.#mux.fail(reason);
      return;
    }
    if (this.#weEnded || this.#failure) return;
    this.#weEnded = true;
    // A session that never sent anything never took the slot: the peer has nothing to end.
    if (this.#started) this.#mux.sendEnd(this.slot);
    else this.#peerEnded = true;
    this.#dropQueue();
    this.#wake(null);
    this.#maybeFree();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.freed;
  }

  /** @internal A message for this slot; false when it is dropped (we ended the slot: a reply in flight). Throws for a violation. */
  take(message: Uint8Array): boolean {
    if (this.#peerEnded) throw new ProtocolError(`a record on slot ${this.slot} after its end`);
    if (this.#weEnded || this.#failure) return false;
    if (this.#awaitingAnswer) throw new ProtocolError(`a record on slot ${this.slot} before its OPEN was answered`);
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve(message);
      return true;
    }
    this.#queue.push(message);
    this.#queuedBytes += Math.max(message.length, RECORD_CHARGE);
    return true;
  }

  /** @internal Server: the peer's OPEN was taken; until this side sends, the peer may send nothing more. */
  awaitAnswer(): void {
    this.#awaitingAnswer = true;
  }

  /** @internal The peer ended the slot, or (`connection`) the whole connection, which ends every slot. */
  peerEnd(o: { connection?: boolean } = {}): void {
    if (this.#peerEnded) {
      if (o.connection) return;
      throw new ProtocolError(`slot ${this.slot} ended twice`);
    }
    this.#peerEnded = true;
    this.#wake(null);
    this.#maybeFree();
  }

  /** @internal The connection failed. */
  fail(e: Error): void {
    if (this.#failure) return;
    this.#failure = e;
    this.#dropQueue();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(e);
    this.#freed();
  }

  #dropQueue(): void {
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#mux.wakeReader();
  }

  #wake(value: null): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.resolve(value);
  }

  #maybeFree(): void {
    if (!this.#weEnded || !this.#peerEnded || this.slot === CONTROL_SLOT) return;
    this.#mux.release(this.slot, this);
    this.#freed();
  }
}

