/**
 * The sealed update as a stream of records (spec §9.3): `SealedWriter` packs records into
 * chunks of UPDATE_CHUNK_SIZE and seals each (noise/sealed-stream.ts) into a work file;
 * `SealedReader` opens chunks one at a time and hands out plaintext bytes; `RecordReader`
 * cuts those into records.
 *
 * Invariants: memory is one chunk plus one record (≤ MAX_DATA_LENGTH + header) on either side,
 * whatever the file's size; a record's length is checked before its payload is read; a
 * reader is at its end only after the chunk marked last, at the end of the file.
 */
import { CHUNK_WORD_SIZE, decodeChunkWord, decodeRecord, decodeRecordHead, encodeRecordParts, OfflineFormatError, UPDATE_CHUNK_SIZE, UPDATE_RECORD_HEADER_SIZE, type UpdateRecord } from "../../protocol/offline-format.ts";
import type { ChunkOpener, ChunkSealer } from "../noise/sealed-stream.ts";
import type { SequentialReader, SequentialWriter } from "../storage/offline-file.ts";

export class SealedWriter {
  readonly #out: SequentialWriter;
  readonly #sealer: ChunkSealer;
  readonly #chunk = new Uint8Array(UPDATE_CHUNK_SIZE);
  #used = 0;

  constructor(out: SequentialWriter, sealer: ChunkSealer) {
    this.#out = out;
    this.#sealer = sealer;
  }

  async record(r: UpdateRecord): Promise<void> {
    const [head, payload] = encodeRecordParts(r);
    await this.#push(head);
    await this.#push(payload);
  }

  /** Seals what is buffered as the last chunk (the END record is in it: never empty). */
  async finish(): Promise<void> {
    await this.#out.write(this.#sealer.seal(this.#chunk.subarray(0, this.#used), true));
    this.#used = 0;
  }

  async #push(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) {
      // A full chunk is sealed only once more bytes come: the last chunk is never empty.
      if (this.#used === this.#chunk.length) {
        await this.#out.write(this.#sealer.seal(this.#chunk, false));
        this.#used = 0;
      }
      const take = Math.min(bytes.length - at, this.#chunk.length - this.#used);
      this.#chunk.set(bytes.subarray(at, at + take), this.#used);
      this.#used += take;
      at += take;
    }
  }
}

export class SealedReader {
  readonly #in: SequentialReader;
  readonly #opener: ChunkOpener;
  #plain = new Uint8Array(0);
  #at = 0;

  constructor(input: SequentialReader, opener: ChunkOpener) {
    this.#in = input;
    this.#opener = opener;
  }

  async need(n: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.#at === this.#plain.length) await this.#next(what);
      const take = Math.min(n - filled, this.#plain.length - this.#at);
      out.set(this.#plain.subarray(this.#at, this.#at + take), filled);
      this.#at += take;
      filled += take;
    }
    return out;
  }

  /** True once the last chunk is consumed; then the file must end too. */
  async atEnd(): Promise<boolean> {
    if (this.#at < this.#plain.length || !this.#opener.ended) return false;
    if (!(await this.#in.atEnd())) throw new OfflineFormatError("it goes on after its last chunk");
    return true;
  }

  async #next(what: string): Promise<void> {
    if (this.#opener.ended) throw new OfflineFormatError(`${what} runs past the last chunk`);
    const w = await this.#in.readExact(CHUNK_WORD_SIZE, "a chunk");
    if (w === null) throw new OfflineFormatError("it ends before its last chunk: the file is truncated");
    const word = new DataView(w.buffer).getUint32(0);
    const { length } = decodeChunkWord(word);
    const body = await this.#in.need(length, "a chunk");
    this.#plain = this.#opener.open(word, body);
    this.#at = 0;
  }
}

export class RecordReader {
  readonly #in: SealedReader;
  #peeked: UpdateRecord | undefined;

  constructor(input: SealedReader) {
    this.#in = input;
  }

  async peek(): Promise<UpdateRecord> {
    this.#peeked ??= await this.#read();
    return this.#peeked;
  }

  async next(): Promise<UpdateRecord> {
    const r = await this.peek();
    this.#peeked = undefined;
    return r;
  }

  /** After END: the stream must end exactly there. */
  async expectEnd(): Promise<void> {
    if (this.#peeked !== undefined || !(await this.#in.atEnd())) throw new OfflineFormatError("records follow END");
  }

  async #read(): Promise<UpdateRecord> {
    const head = decodeRecordHead(await this.#in.need(UPDATE_RECORD_HEADER_SIZE, "a record"));
    return decodeRecord(head, await this.#in.need(head.payloadLength, `${head.type} record`));
  }
}
