/**
 * The redo journal: what a sync will do to a destination, written beside it before any of it
 * is done (storage/journaled-storage.ts), and applied only once it is complete and committed.
 *
 * Layout (all integers little-endian):
 *   "SSYNCJ01" | u32 n | n bytes of JSON (JournalHeader)
 *   records, each a 32-byte head: u32 type | u32 0 | u64 offset | u64 length | u64 0
 *     WRITE (1): followed by `length` bytes, to be written at `offset`
 *     ZERO  (2): [offset, offset + length) is to read as zeros (a hole where possible)
 *     SIZE  (3): the destination's size becomes `offset` (files; `length` is 0)
 *     COMMIT(4): `offset` = the number of records before it, `length` = its own position,
 *                followed by 32 bytes: SHA-256 of the header and of every record head before
 *                it, in order. The last thing ever written to a journal.
 *
 * Invariants:
 * - Records are applied in journal order; applying a prefix and then all of them again gives
 *   the same result as applying them once (each sets fixed bytes, a fixed hole or a fixed
 *   size), so a crash during apply is mended by applying again.
 * - A COMMIT record is written only after every record before it is on disk (fsync), and is
 *   fsynced itself: a journal whose COMMIT checks is complete. Its hash covers every record
 *   head, so a torn COMMIT, a truncated journal or a head that is not ours never checks.
 * - Anything else (no COMMIT, one that does not check, a bad head) is an uncommitted
 *   journal: the destination was never touched by it, and it is simply removed.
 */
import { Buffer } from "node:buffer";
import { createHash, type Hash } from "node:crypto";
import fs from "node:fs";
import { crashPoint } from "./crash-point.ts";

const MAGIC = Buffer.from("SSYNCJ01");
const HEAD = 32;
const COMMIT_BYTES = HEAD + 32;
/** A header longer than this is not one of ours. */
const MAX_HEADER_JSON = 64 * 1024;
/** Data is copied from the journal to the destination in pieces this big. */
const APPLY_CHUNK = 1 << 20;

export const RecordType = { WRITE: 1, ZERO: 2, SIZE: 3, COMMIT: 4 } as const;
type DataRecordType = typeof RecordType.WRITE | typeof RecordType.ZERO | typeof RecordType.SIZE;

export interface JournalHeader {
  readonly version: 1;
  readonly kind: "file" | "block-device";
  /** The destination as the journal's writer named it (messages only). */
  readonly path: string;
  /** Device and inode of the destination (decimal strings): a journal applies to that file only. */
  readonly dev: string;
  readonly ino: string;
  /** The destination's size when the sync began. */
  readonly sizeBefore: number;
  /** A block device's stable identity (storage/device-identity.ts), when it has one. */
  readonly deviceId?: string;
  /** When the sync began (ISO 8601) and which process wrote the journal. */
  readonly created: string;
  readonly pid: number;
  /**
   * Random, per journal: the COMMIT record's hash covers it, so bytes a peer sends as DATA
   * (which land in the journal) cannot be made to look like this journal's COMMIT record.
   */
  readonly nonce: string;
}

export interface JournalRecord {
  readonly type: DataRecordType;
  readonly offset: number;
  readonly length: number;
  /** WRITE: where its data starts in the journal. */
  readonly dataAt: number;
}

/** What a destination's journal operations need: the destination's own store (never journaled). */
export interface ApplyTarget {
  write(buf: Uint8Array, position: number): Promise<void>;
  punchHole(position: number, length: number): Promise<unknown>;
  setSize(size: number): Promise<void>;
}

function head(type: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(HEAD);
  b.writeUInt32LE(type, 0);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeBigUInt64LE(BigInt(length), 16);
  return b;
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
}

function writeAt(fd: number, buf: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done === buf.length) return resolve();
      fs.write(fd, buf, done, buf.length - done, position + done, (e, n) => (e ? reject(e) : step(done + n)));
    };
    step(0);
  });
}

function readAt(fd: number, buf: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done === buf.length) return resolve();
      fs.read(fd, buf, done, buf.length - done, position + done, (e, n) => {
        if (e) return reject(e);
        if (n === 0) return reject(Object.assign(new Error("the journal ends early"), { code: "EIO" }));
        step(done + n);
      });
    };
    step(0);
  });
}

/** Appends records to a new journal; see the invariants above. Owns its descriptor. */
export class JournalWriter {
  readonly path: string;
  readonly #fd: number;
  readonly #hash: Hash = createHash("sha256");
  /** Appends not yet settled (bounded by the writes the session has in flight). */
  readonly #pending = new Set<Promise<void>>();
  /** Where the first record starts, and where the next one goes. */
  readonly #start: number;
  #end: number;
  #count = 0;
  #committed = false;
  #closed = false;

  private constructor(path: string, fd: number, headerBytes: Buffer) {
    this.path = path;
    this.#fd = fd;
    this.#hash.update(headerBytes);
    this.#start = headerBytes.length;
    this.#end = headerBytes.length;
  }

  /**
   * Creates the journal at `path` (O_EXCL: never a file that is there, nor through a link)
   * with its header; synchronous, so it exists at once.
   */
  static create(path: string, header: JournalHeader): JournalWriter {
    const json = Buffer.from(JSON.stringify(header));
    const bytes = Buffer.alloc(MAGIC.length + 4 + json.length);
    MAGIC.copy(bytes, 0);
    bytes.writeUInt32LE(json.length, MAGIC.length);
    json.copy(bytes, MAGIC.length + 4);
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    try {
      fs.writeSync(fd, bytes, 0, bytes.length, 0);
    } catch (e) {
      fs.closeSync(fd);
      fs.rmSync(path, { force: true }); // ours (O_EXCL): a later try must not find it in the way
      throw e;
    }
    return new JournalWriter(path, fd, bytes);
  }

  /**
   * The records appended so far, read back from the journal (kept on disk, not in memory: a
   * session may write millions). Only once every append settled (after sync or commit).
   */
  records(): AsyncGenerator<JournalRecord> {
    return journalRecords(this.#fd, this.#start, this.#end);
  }

  /** Bytes the journal holds so far. */
  get bytes(): number {
    return this.#end;
  }

  /**
   * Appends one record: its place is taken now (so records keep the order of the calls),
   * the bytes are written by the promise. `data` only for WRITE (its length is `length`).
   */
  append(type: DataRecordType, offset: number, length: number, data?: Uint8Array): Promise<void> {
    if (this.#committed || this.#closed) throw new Error(`journal ${this.path} is ${this.#closed ? "closed" : "committed"}`);
    const h = head(type, offset, length);
    const at = this.#end;
    this.#end += HEAD + (type === RecordType.WRITE ? length : 0);
    this.#hash.update(h);
    this.#count++;
    const p = (async () => {
      await writeAt(this.#fd, h, at);
      if (data) await writeAt(this.#fd, data, at + HEAD);
      crashPoint("journal-write");
    })();
    this.#pending.add(p);
    const forget = () => this.#pending.delete(p);
    p.then(forget, forget);
    return p;
  }

  /** Waits for every append, then fsyncs. */
  async sync(): Promise<void> {
    await Promise.all(this.#pending);
    await fsyncFd(this.#fd);
  }

  /** The commit point: every record on disk, then the COMMIT record, fsynced. */
  async commit(): Promise<void> {
    await this.sync();
    crashPoint("journal-synced");
    const rec = Buffer.alloc(COMMIT_BYTES);
    head(RecordType.COMMIT, this.#count, this.#end).copy(rec, 0);
    this.#hash.copy().digest().copy(rec, HEAD);
    await writeAt(this.#fd, rec, this.#end);
    await fsyncFd(this.#fd);
    this.#committed = true;
    crashPoint("committed");
  }

  /** Applies the records to `target`, in order (after commit, or to replay). */
  apply(target: ApplyTarget, point: string): Promise<void> {
    return applyRecords(this.#fd, this.records(), target, point);
  }

  /**
   * Refuses further appends, waits for those under way (their bytes must never go through a
   * descriptor number reused by another file), then closes the descriptor.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#pending);
    fs.closeSync(this.#fd);
  }
}

/** Copies each record's effect to `target`, in journal order. */
export async function applyRecords(fd: number, records: AsyncIterable<JournalRecord>, target: ApplyTarget, point: string): Promise<void> {
  let buf: Buffer | undefined;
  for await (const r of records) {
    switch (r.type) {
      case RecordType.WRITE:
        buf ??= Buffer.allocUnsafe(APPLY_CHUNK);
        for (let done = 0; done < r.length; done += APPLY_CHUNK) {
          const piece = buf.subarray(0, Math.min(APPLY_CHUNK, r.length - done));
          await readAt(fd, piece, r.dataAt + done);
          await target.write(piece, r.offset + done);
        }
        break;
      case RecordType.ZERO:
        await target.punchHole(r.offset, r.length);
        break;
      case RecordType.SIZE:
        await target.setSize(r.offset);
        break;
      default:
        throw new Error(`unknown journal record ${(r.type satisfies never as number)}`);
    }
    crashPoint(point);
  }
}

/** Record heads are read through a buffer this big (many small records cost few reads). */
const SCAN_BUFFER = 64 * 1024;

/**
 * The records between `start` and `end` (exclusive; COMMIT excluded), read from disk in
 * order. Throws when a head is not a valid data record.
 */
export async function* journalRecords(fd: number, start: number, end: number): AsyncGenerator<JournalRecord> {
  const buf = Buffer.alloc(SCAN_BUFFER);
  let bufAt = 0;
  let bufLength = 0;
  let at = start;
  while (at < end) {
    if (at < bufAt || at + HEAD > bufAt + bufLength) {
      bufAt = at;
      bufLength = await readSome(fd, buf, at);
      if (bufLength < HEAD) throw Object.assign(new Error(`the journal ends inside a record at ${at}`), { code: "EIO" });
    }
    const h = buf.subarray(at - bufAt, at - bufAt + HEAD);
    const r = dataRecord(h, at);
    if (!r) throw Object.assign(new Error(`the journal holds an invalid record at ${at}`), { code: "EIO" });
    yield r;
    at = r.dataAt + (r.type === RecordType.WRITE ? r.length : 0);
  }
}

function readSome(fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, position, (e, n) => (e ? reject(e) : resolve(n))));
}

/** The data record whose head is `h` at `at`, or undefined when it is not one. */
function dataRecord(h: Buffer, at: number): JournalRecord | undefined {
  const type = h.readUInt32LE(0);
  const offset = Number(h.readBigUInt64LE(8));
  const length = Number(h.readBigUInt64LE(16));
  if (type !== RecordType.WRITE && type !== RecordType.ZERO && type !== RecordType.SIZE) return undefined;
  if (h.readUInt32LE(4) !== 0 || h.readBigUInt64LE(24) !== 0n || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) return undefined;
  return { type, offset, length, dataAt: at + HEAD };
}

/** The header of the journal at `path`, or undefined (none, or not readable as one). */
export function readJournalHeader(path: string): JournalHeader | undefined {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd);
      return undefined;
    }
  } catch {
    return undefined;
  }
  try {
    const pre = Buffer.alloc(MAGIC.length + 4);
    if (fs.readSync(fd, pre, 0, pre.length, 0) < pre.length || !pre.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
    const n = pre.readUInt32LE(MAGIC.length);
    if (n > MAX_HEADER_JSON) return undefined;
    const json = Buffer.alloc(n);
    if (fs.readSync(fd, json, 0, n, pre.length) < n) return undefined;
    const header = JSON.parse(json.toString("utf8")) as JournalHeader;
    return header?.version === 1 ? header : undefined;
  } catch {
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

export type JournalState =
  | { committed: true; header: JournalHeader; records: () => AsyncGenerator<JournalRecord> }
  | { committed: false; header: JournalHeader | undefined; why: string };

/**
 * Reads the journal on `fd` from the start (never trusting more than checks): its header and,
 * when its COMMIT record checks, a way to read its records. Memory stays bounded whatever
 * the journal holds.
 */
export async function readJournal(fd: number): Promise<JournalState> {
  const size = Number(fs.fstatSync(fd, { bigint: true }).size);
  const pre = Buffer.alloc(MAGIC.length + 4);
  if (size < pre.length || fs.readSync(fd, pre, 0, pre.length, 0) < pre.length || !pre.subarray(0, MAGIC.length).equals(MAGIC)) {
    return { committed: false, header: undefined, why: "it is not an ssync journal" };
  }
  const n = pre.readUInt32LE(MAGIC.length);
  if (n > MAX_HEADER_JSON || pre.length + n > size) return { committed: false, header: undefined, why: "its header is cut short" };
  const json = Buffer.alloc(n);
  fs.readSync(fd, json, 0, n, pre.length);
  let header: JournalHeader;
  try {
    header = JSON.parse(json.toString("utf8")) as JournalHeader;
  } catch {
    return { committed: false, header: undefined, why: "its header is not valid" };
  }
  if (header?.version !== 1) return { committed: false, header: undefined, why: "its header is not valid" };
  // The COMMIT record, if any, is the last 64 bytes; everything before it must check.
  const commitAt = size - COMMIT_BYTES;
  const start = pre.length + n;
  const tail = Buffer.alloc(COMMIT_BYTES);
  if (commitAt < start || fs.readSync(fd, tail, 0, COMMIT_BYTES, commitAt) < COMMIT_BYTES) {
    return { committed: false, header, why: "it has no commit record" };
  }
  if (tail.readUInt32LE(0) !== RecordType.COMMIT || Number(tail.readBigUInt64LE(16)) !== commitAt) {
    return { committed: false, header, why: "it has no commit record" };
  }
  const hash = createHash("sha256").update(pre).update(json);
  let count = 0;
  try {
    for await (const r of journalRecords(fd, start, commitAt)) {
      hash.update(head(r.type, r.offset, r.length));
      count++;
    }
  } catch {
    return { committed: false, header, why: "it holds a record that is not valid" };
  }
  if (count !== Number(tail.readBigUInt64LE(8)) || !tail.subarray(HEAD).equals(hash.digest())) {
    return { committed: false, header, why: "its commit record does not check" };
  }
  return { committed: true, header, records: () => journalRecords(fd, start, commitAt) };
}
