import type { Socket } from "node:net";
import { setImmediate } from "node:timers";
import { MAX_SLOT_RECORD, REKEY_INTERVAL, TAG_SIZE } from "../../protocol/constants.ts";
import { type Frame, FrameReader } from "../../protocol/frame-reader.ts";
import { encodeRecordWord, isEndWord, RECORD_FRAME_FORMAT } from "../../protocol/record-word.ts";
import type { CipherState } from "../noise/cipher-state.ts";
import { MAX_NONCE } from "../noise/cipher-state.ts";
import { type RecordParts, recordLength } from "../util/record-parts.ts";
import { releaseBuffer } from "../util/release-buffer.ts";
import type { RecordChannel } from "./record-channel.ts";

/**
 * The encrypted record layer that runs after the Noise handshake.
 *
 * Frame on the wire (spec §2, layout in protocol/record-word.ts): the record word, then
 * the ciphertext (the record's plaintext followed by its TAG_SIZE-byte AEAD tag).
 *   - an END frame has an empty plaintext and is the only orderly end of a direction;
 *     TCP EOF without it is a truncation and an error.
 *   - the AEAD associated data of each record is its word's bytes, so the length and the
 *     END flag are authenticated.
 *   - nonces are implicit: each direction counts records from 0 (the CipherStates from Split()),
 *     so a dropped, replayed or reordered record fails authentication.
 *   - after every REKEY_INTERVAL records in a direction, both ends Rekey() that direction.
 *
 * Stages of a received chunk: 1. FrameReader cuts it into frames, checking each length
 * BEFORE allocating, without copying a frame that lies in one chunk, 2. authenticate and
 * decrypt, 3. queue the plaintext; pause the socket while too much waits unread.
 * Sending: a record (one buffer, or its parts: header and payload) is sealed part by part,
 * never concatenated: the cipher's output is the one user-space copy of a payload; the word,
 * each ciphertext and the tag go out corked: the socket stays corked until the end of the
 * event loop's turn (setImmediate) or CORK_FLUSH_BYTES, so the small records of one turn (many
 * replies of a batch's slots) leave in one writev instead of one each. A record is sealed and written at
 * once while the socket holds at most maxUnsentBytes; beyond that it waits in order, unsealed,
 * until 'drain', so the socket never holds more than maxUnsentBytes plus one record (the
 * threshold is checked BEFORE writing).
 * Record plaintexts are at most MAX_SLOT_RECORD bytes (a message and a batch's slot prefix); REKEY_INTERVAL is configurable only for tests.
 * Memory: buffers only this channel holds are released (util/release-buffer.ts) as soon as
 * they are dead, not left for the GC: a socket chunk once every frame in it is opened, a
 * frame body gathered across chunks once opened, each ciphertext once its write completed.
 * A received plaintext belongs to whoever receive()d it.
 */

/** Default maxUnreadBytes: decoded bytes waiting for receive() before reading pauses. */
export const DEFAULT_MAX_UNREAD_BYTES = 8 * 1024 * 1024;
/**
 * Records written while corked, in bytes, past which they leave at once rather than at the end
 * of the turn: small records (a batch's replies) coalesce; DATA goes out as it is written; and
 * at most this much sits corked, whatever a runtime counts in writableLength while corked, so
 * #mustWait's bound on what the socket holds stays within CORK_FLUSH_BYTES of maxUnsentBytes.
 */
const CORK_FLUSH_BYTES = 64 * 1024;

/** Default maxUnsentBytes: bytes the socket may hold before send() waits for 'drain'. */
export const DEFAULT_MAX_UNSENT_BYTES = 4 * 1024 * 1024;

export interface NoiseRecordChannelOptions {
  /** Our sending CipherState from Split(). */
  send: CipherState;
  /** Our receiving CipherState from Split(). */
  receive: CipherState;
  /** Bytes already read from the socket after the last handshake message. */
  initialData?: Uint8Array;
  /** Records between rekeys; both ends must agree. Tests only. */
  rekeyInterval?: number;
  /** Pause reading while this many decoded bytes wait for receive(). Default 8 MiB. */
  maxUnreadBytes?: number;
  /** Pause reading while this many decoded records wait for receive(). Default 4096. */
  maxUnreadRecords?: number;
  /** send() waits for 'drain' before writing while the socket buffers more than this. Default 4 MiB. */
  maxUnsentBytes?: number;
}

type Waiter = { resolve: (record: Uint8Array | null) => void; reject: (error: Error) => void };
/** A record waiting for 'drain': its parts (not sealed yet) and their total length in bytes. */
type PendingSend = { parts: RecordParts; bytes: number; resolve: () => void; reject: (error: Error) => void };

/**
 * A RecordChannel over a connected socket, after a completed Noise handshake.
 * Owns the socket: close()/dispose end or destroy it.
 */
export class NoiseRecordChannel implements RecordChannel {
  readonly socket: Socket;
  #send: CipherState;
  #receive: CipherState;
  #rekeyInterval: number;
  #maxUnreadBytes: number;
  #maxUnreadRecords: number;
  #maxUnsentBytes: number;

  #sentRecords = 0;
  /** The socket is corked until the end of this turn (#corkForTurn), or until CORK_FLUSH_BYTES. */
  #corked = false;
  #corkedBytes = 0;
  #receivedRecords = 0;

  #frames = new FrameReader(RECORD_FRAME_FORMAT);

  // Decoded records not yet taken by receive(); #queueHead avoids O(n) shifts.
  #queue: Uint8Array[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #paused = false;
  #receiveWaiters: Waiter[] = [];
  /** Records waiting for 'drain', in order; not sealed yet (nonces are taken when written). */
  #unsent: PendingSend[] = [];

  /** The peer sent its END record: receive() yields null once the queue is empty. */
  #peerEnded = false;
  /** We closed (orderly or not); no more sends. */
  #closed = false;
  /** Set once the channel is dead; every later call rejects with it. */
  #error: Error | null = null;
  #socketClosed: Promise<void>;

  constructor(socket: Socket, options: NoiseRecordChannelOptions) {
    this.socket = socket;
    this.#send = options.send;
    this.#receive = options.receive;
    this.#rekeyInterval = options.rekeyInterval ?? REKEY_INTERVAL;
    if (!Number.isSafeInteger(this.#rekeyInterval) || this.#rekeyInterval < 1) {
      throw new RangeError(`Cannot use rekey interval ${this.#rekeyInterval}: it must be a positive integer`);
    }
    this.#maxUnreadBytes = options.maxUnreadBytes ?? DEFAULT_MAX_UNREAD_BYTES;
    this.#maxUnreadRecords = options.maxUnreadRecords ?? 4096;
    this.#maxUnsentBytes = options.maxUnsentBytes ?? DEFAULT_MAX_UNSENT_BYTES;
    this.#socketClosed = new Promise((resolve) => {
      if (socket.destroyed) resolve();
      else socket.once("close", () => resolve());
    });

    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.#onData(chunk, { fromSocket: true }));
    socket.on("end", () => {
      if (this.#closed || this.#peerEnded) return;
      const where = this.#frames.inFrame ? "in the middle of a record" : "without an END record";
      this.#fail(new Error(`Cannot read from the peer: the connection ended ${where} (truncated stream)`));
    });
    socket.on("error", (error: Error) => {
      this.#fail(new Error(`Cannot use the connection: ${error.message}`, { cause: error }));
    });
    socket.on("close", () => {
      if (!this.#closed && !this.#peerEnded) this.#fail(new Error("Cannot use the connection: it was closed"));
      this.#rejectUnsent(this.#error ?? new Error("Cannot send: the connection is closed"));
    });
    socket.on("drain", () => this.#writeUnsent());
    if (options.initialData !== undefined && options.initialData.length > 0) {
      this.#onData(options.initialData, { fromSocket: false });
    }
    if (!this.#paused && !this.#error) socket.resume();
  }

  /**
   * Encrypts and writes one record, at once while the socket holds at most maxUnsentBytes;
   * otherwise the record waits (in order) for 'drain' before it is written. Resolves once
   * written. The caller must not change `record` until then.
   */
  send(record: RecordParts): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed) return Promise.reject(new Error("Cannot send: the channel is closed"));
    const length = recordLength(record);
    if (length > MAX_SLOT_RECORD) {
      return Promise.reject(new RangeError(`Cannot send a ${length}-byte record: the limit is ${MAX_SLOT_RECORD} bytes`));
    }
    if (this.#unsent.length === 0 && !this.#mustWait()) {
      try {
        this.#transmit(record);
      } catch (e) {
        return Promise.reject(e);
      }
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.#unsent.push({ parts: record, bytes: length, resolve, reject }));
  }

  /** RecordChannel.sendBacklog: what the socket holds and the records waiting for 'drain'. */
  sendBacklog(): number {
    let bytes = this.socket.writableLength;
    for (const s of this.#unsent) bytes += s.bytes;
    return bytes / this.#maxUnsentBytes;
  }

  /**
   * True while the socket holds more than maxUnsentBytes and will say 'drain' (it does once a
   * write found its buffer past the high-water mark; below that there is nothing to wait for).
   */
  #mustWait(): boolean {
    return this.socket.writableLength > this.#maxUnsentBytes && this.socket.writableNeedDrain;
  }

  /** Writes waiting records in order until the socket is past the threshold again. */
  #writeUnsent(): void {
    while (this.#unsent.length > 0 && !this.#error && !this.#mustWait()) {
      const s = this.#unsent.shift()!;
      try {
        this.#transmit(s.parts);
        s.resolve();
      } catch (e) {
        s.reject(e as Error);
      }
    }
  }

  /** Seals and writes a data record; throws (and kills the channel) when the nonces run out. */
  #transmit(record: RecordParts): void {
    // Keep one nonce for the END record so that a direction can always end cleanly.
    if (this.#send.nonce >= MAX_NONCE - 1n) {
      const error = new Error("Cannot send: the record counter of this channel is exhausted");
      this.#writeRecord(new Uint8Array(0), true);
      this.#fail(error);
      throw error;
    }
    this.#writeRecord(record, false);
  }

  #writeRecord(plaintext: RecordParts, end: boolean): void {
    const header = encodeRecordWord(recordLength(plaintext) + TAG_SIZE, end);
    // Parts are sealed one after the other (the AEAD is a stream): no concatenation copy.
    const { ciphertext, tag } = plaintext instanceof Uint8Array
      ? this.#send.seal(header, plaintext)
      : this.#send.sealParts(header, plaintext);
    if (++this.#sentRecords % this.#rekeyInterval === 0) this.#send.rekey();
    // One writev for the word, the ciphertext(s) and the tag, and the turn's other records.
    this.#corkForTurn();
    this.socket.write(header);
    if (ciphertext instanceof Uint8Array) {
      if (ciphertext.length > 0) this.socket.write(ciphertext, (e) => e ? undefined : releaseBuffer(ciphertext));
    } else {
      // Each ciphertext is the cipher's own new buffer: once written, nothing reads it.
      for (const c of ciphertext) this.socket.write(c, (e) => e ? undefined : releaseBuffer(c));
    }
    this.socket.write(tag);
    // Only small records wait for the end of the turn: past CORK_FLUSH_BYTES the turn's records
    // go out now, so the socket's own count (and with it #mustWait's bound) sees every byte.
    this.#corkedBytes += header.length + recordLength(plaintext) + TAG_SIZE;
    if (this.#corkedBytes >= CORK_FLUSH_BYTES) this.#uncork();
  }

  /** Corks the socket until the end of this turn of the event loop (at most one cork held). */
  #corkForTurn(): void {
    if (this.#corked) return;
    this.#corked = true;
    this.socket.cork();
    setImmediate(() => this.#uncork());
  }

  #uncork(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#corkedBytes = 0;
    this.socket.uncork();
  }

  /** The next record in order, or null after the peer's END record (or our own close()). */
  receive(): Promise<Uint8Array | null> {
    if (this.#queueHead < this.#queue.length) return Promise.resolve(this.#take());
    if (this.#peerEnded) return Promise.resolve(null);
    if (this.#error) return Promise.reject(this.#error);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => this.#receiveWaiters.push({ resolve, reject }));
  }

  #take(): Uint8Array {
    const record = this.#queue[this.#queueHead];
    this.#queue[this.#queueHead++] = undefined as unknown as Uint8Array;
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    this.#queuedBytes -= record.length;
    if (
      this.#paused && !this.#error && this.#queuedBytes <= this.#maxUnreadBytes / 2 &&
      this.#queue.length - this.#queueHead <= this.#maxUnreadRecords / 2
    ) {
      this.#paused = false;
      this.socket.resume();
    }
    return record;
  }

  /** `fromSocket`: the chunk is the socket's, ours alone once this listener returns. */
  #onData(chunk: Uint8Array, o: { fromSocket: boolean }): void {
    if (this.#error || this.#peerEnded || this.#closed) return;
    this.#frames.push(chunk);
    for (;;) {
      let frame: Frame | null;
      try {
        frame = this.#frames.next();
      } catch (error) {
        this.#fail(new Error(`Cannot read record: ${(error as Error).message}`, { cause: error }));
        return;
      }
      if (frame === null) break;
      this.#openRecord(frame, chunk);
      // The rest of the chunk is never pushed again: these states are final.
      if (this.#error || this.#peerEnded || this.#closed) break;
    }
    // Every frame body that lay in the chunk was opened (decrypted into a new buffer), and the
    // frame reader holds none of it: the socket's chunk is dead, unless another 'data'
    // listener (a test's byte counter) gets it after us.
    if (o.fromSocket && this.socket.listenerCount("data") === 1) releaseBuffer(chunk);
  }

  #openRecord(frame: Frame, chunk: Uint8Array): void {
    const { body } = frame;
    const end = isEndWord(frame.word);
    // The frame reader checked the word, so it is exactly (ciphertext length, END).
    const header = encodeRecordWord(body.length, end);
    const split = body.length - TAG_SIZE;
    let plaintext: Uint8Array;
    try {
      plaintext = this.#receive.open(header, { ciphertext: body.subarray(0, split), tag: body.subarray(split) });
    } catch (error) {
      this.#fail(new Error(`Cannot read record ${this.#receivedRecords}: ${(error as Error).message}`));
      return;
    }
    // A body gathered across chunks is the frame reader's own buffer, given to us; one inside
    // the chunk goes with the chunk (the reader still reads the chunk).
    if (body.buffer !== chunk.buffer) releaseBuffer(body);
    if (++this.#receivedRecords % this.#rekeyInterval === 0) this.#receive.rekey();
    if (end) {
      this.#peerEnded = true;
      const waiters = this.#receiveWaiters;
      this.#receiveWaiters = [];
      for (const w of waiters) w.resolve(null);
      return;
    }
    const waiter = this.#receiveWaiters.shift();
    if (waiter !== undefined) {
      waiter.resolve(plaintext);
      return;
    }
    this.#queue.push(plaintext);
    this.#queuedBytes += plaintext.length;
    if (
      !this.#paused &&
      (this.#queuedBytes >= this.#maxUnreadBytes || this.#queue.length - this.#queueHead >= this.#maxUnreadRecords)
    ) {
      this.#paused = true;
      this.socket.pause();
    }
  }

  #rejectUnsent(error: Error): void {
    const unsent = this.#unsent;
    this.#unsent = [];
    for (const s of unsent) s.reject(error);
  }

  /** Kills the channel: no END record, the socket is destroyed, everything pending rejects. */
  #fail(error: Error): void {
    if (this.#error) return;
    this.#error = error;
    this.#closed = true;
    // After the peer's END the stream was complete and authentic: keep what it delivered.
    if (!this.#peerEnded) {
      this.#queue = [];
      this.#queueHead = 0;
      this.#queuedBytes = 0;
    }
    // Records already sent (this turn's, corked) go out first, as they would uncorked.
    this.#uncork();
    this.socket.destroy();
    const waiters = this.#receiveWaiters;
    this.#receiveWaiters = [];
    for (const w of waiters) w.reject(error);
    this.#rejectUnsent(error);
  }

  /**
   * close(): orderly end: sends the END record, then ends the socket (pending receive()
   * calls resolve null). close(reason): kills the channel at once with that reason.
   * Idempotent.
   */
  close(reason?: Error): void {
    if (reason !== undefined) {
      this.#fail(reason);
      return;
    }
    if (this.#closed) return;
    // Records still waiting for 'drain' go out first, in order, then END.
    while (this.#unsent.length > 0 && !this.#error) {
      const s = this.#unsent.shift()!;
      try {
        if (!this.socket.writable) throw new Error("Cannot send: the connection is closed");
        this.#transmit(s.parts);
        s.resolve();
      } catch (e) {
        s.reject(e as Error);
      }
    }
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (this.socket.writable) this.#writeRecord(new Uint8Array(0), true);
    } catch {
      // The nonce is exhausted: ending without END is all that is left.
    }
    this.#uncork();
    this.socket.end();
    // Whatever the peer still sends is discarded; give up on a peer that never closes.
    this.socket.resume();
    const timer = setTimeout(() => this.socket.destroy(), 5000);
    (timer as { unref?: () => void }).unref?.();
    this.socket.once("close", () => clearTimeout(timer));
    const waiters = this.#receiveWaiters;
    this.#receiveWaiters = [];
    for (const w of waiters) w.resolve(null);
    // Records already written will still be flushed before the FIN.
  }

  /** Closes (orderly) and waits until the socket is closed. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#socketClosed;
  }
}
