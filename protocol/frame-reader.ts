import { Buffer } from "node:buffer";

/**
 * A pure frame reader: bytes in, in chunks of any size; length-checked frames out. No
 * sockets, no crypto. A frame is a big-endian length word of `format.wordSize` bytes, then
 * a body of `format.bodyLength(word)` bytes.
 *
 * Stages of each frame:
 * 1. gather the word, byte by byte when it straddles chunks;
 * 2. check it with `format.bodyLength`, which throws on a bad word, BEFORE anything is
 *    allocated for the body;
 * 3. gather the body: a subarray of the chunk (no copy) when it lies inside one; otherwise
 *    one allocation of exactly its length, made once its first byte has arrived, and a copy
 *    of each piece.
 *
 * Invariants: push() a chunk only after next() returned null (the previous chunk is then
 * consumed); once next() has thrown the reader is dead and throws that error again.
 */

export interface FrameFormat {
  /** Bytes of the big-endian length word before each body: 1 … 4. */
  readonly wordSize: number;
  /** The body length `word` announces; throws ProtocolError if the word breaks a limit. */
  bodyLength(word: number): number;
}

export interface Frame {
  /** The length word as received, flags included (unsigned). */
  word: number;
  /** Exactly bodyLength(word) bytes; a subarray of the pushed chunk when it lay inside one. */
  body: Uint8Array;
}

const EMPTY = new Uint8Array(0);

export class FrameReader {
  #format: FrameFormat;
  #chunk: Uint8Array = EMPTY;
  #offset = 0;
  // Invariant: #bodyLength < 0 while the word is gathered; then #word is complete and checked.
  #wordBytes = 0;
  #word = 0;
  #bodyLength = -1;
  // Non-null only while a body straddles chunks; #bodyFill bytes of it are filled.
  #body: Uint8Array | null = null;
  #bodyFill = 0;
  #error: unknown = null;

  constructor(format: FrameFormat) {
    if (!Number.isInteger(format.wordSize) || format.wordSize < 1 || format.wordSize > 4) {
      throw new RangeError(
        `Cannot read frames with a ${format.wordSize}-byte length word: it must be 1 … 4 bytes`,
      );
    }
    this.#format = format;
  }

  /** True when part of a frame has arrived: the stream ending now would truncate it. */
  get inFrame(): boolean {
    return this.#wordBytes > 0;
  }

  /** Hands the reader the next chunk; its frames come out of next(). */
  push(chunk: Uint8Array): void {
    if (this.#offset < this.#chunk.length) {
      throw new Error(
        "Cannot push a chunk: the previous one is not consumed (call next() until it returns null)",
      );
    }
    this.#chunk = chunk;
    this.#offset = 0;
  }

  /** The next complete frame, or null once every pushed byte is consumed. */
  next(): Frame | null {
    if (this.#error !== null) throw this.#error;
    const chunk = this.#chunk;
    if (this.#bodyLength < 0) {
      const size = this.#format.wordSize;
      let word = this.#word;
      let got = this.#wordBytes;
      let offset = this.#offset;
      while (got < size && offset < chunk.length) {
        word = word * 256 + chunk[offset++];
        got++;
      }
      this.#word = word;
      this.#wordBytes = got;
      this.#offset = offset;
      if (got < size) return null;
      try {
        this.#bodyLength = this.#format.bodyLength(this.#word);
      } catch (error) {
        this.#error = error;
        throw error;
      }
    }
    const length = this.#bodyLength;
    const available = chunk.length - this.#offset;
    if (this.#body === null) {
      if (available >= length) {
        const body = chunk.subarray(this.#offset, this.#offset + length);
        this.#offset += length;
        return this.#frame(body);
      }
      if (available === 0) return null;
      // Every byte is overwritten by the copies below before the body is returned.
      this.#body = Buffer.allocUnsafe(length);
      this.#bodyFill = 0;
    }
    const n = Math.min(length - this.#bodyFill, available);
    this.#body.set(chunk.subarray(this.#offset, this.#offset + n), this.#bodyFill);
    this.#bodyFill += n;
    this.#offset += n;
    if (this.#bodyFill < length) return null;
    const body = this.#body;
    this.#body = null;
    return this.#frame(body);
  }

  #frame(body: Uint8Array): Frame {
    const frame = { word: this.#word, body };
    this.#word = 0;
    this.#wordBytes = 0;
    this.#bodyLength = -1;
    return frame;
  }
}
