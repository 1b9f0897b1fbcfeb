/**
 * The offline files of spec §9: a signature (`ssync signature`, clear) and a sealed update
 * (`ssync diff`, read by `ssync apply`). Pure encode and decode of their fixed parts; every
 * length is checked against its limit before anything is allocated, and decoding checks
 * exact sizes and reserved fields first (one encoding per value).
 */
import { DIGEST_SIZE, HASH_KEY_SIZE, HashCode, type HashAlgorithm, MAX_BLOCK_SIZE, MAX_DATA_LENGTH, MAX_RANGE_BLOCKS, MIN_BLOCK_SIZE, MAX_U53 } from "./constants.ts";

/** A file that is not a well-formed signature or update, or an update that fails to authenticate. */
export class OfflineFormatError extends Error {
  override name = "OfflineFormatError";
}

export const OFFLINE_VERSION = 1;
/** "SSYNCSIG": a signature file. */
export const SIGNATURE_MAGIC: readonly number[] = Object.freeze([0x53, 0x53, 0x59, 0x4e, 0x43, 0x53, 0x49, 0x47]);
/** "SSYNCUPD": a sealed update file. */
export const UPDATE_MAGIC: readonly number[] = Object.freeze([0x53, 0x53, 0x59, 0x4e, 0x43, 0x55, 0x50, 0x44]);
export const OFFLINE_MAGIC_SIZE = 8;
export const PUBLIC_KEY_SIZE = 32;

/** Blocks per range of the file's fixed partition: ranges [k·R, (k+1)·R) of the root hash (§4) and of the files. */
export const OFFLINE_RANGE_BLOCKS = MAX_RANGE_BLOCKS;
/** The largest digest-run encoding of one range: every block a run of its own. */
export const MAX_RANGE_RUNS_BYTES = OFFLINE_RANGE_BLOCKS * (5 + DIGEST_SIZE);

/** magic 8, u16 version, u8 hash, u8 flags (0), u32 block size, u53 size, hash key 32, host key 32. */
export const SIGNATURE_HEADER_SIZE = OFFLINE_MAGIC_SIZE + 2 + 1 + 1 + 4 + 8 + HASH_KEY_SIZE + PUBLIC_KEY_SIZE;
/** The root (16, known once every digest is), then SHA-256 of every byte before it (32): catches a damaged file, authenticates nothing. */
export const SIGNATURE_TRAILER_SIZE = DIGEST_SIZE + 32;

/** magic 8, u16 version, u16 flags (0), recipient key 32, sender key 32, ephemeral key 32: all in clear. */
export const UPDATE_HEADER_SIZE = OFFLINE_MAGIC_SIZE + 2 + 2 + 3 * PUBLIC_KEY_SIZE;
/** Bytes of plaintext in one sealed chunk, at most. */
export const UPDATE_CHUNK_SIZE = 256 * 1024;
/** The chunk word: bit 31 marks the last chunk, bits 0–30 the ciphertext length (plaintext + tag). */
export const CHUNK_WORD_SIZE = 4;
export const CHUNK_LAST_FLAG = 0x8000_0000;
export const CHUNK_LENGTH_MASK = 0x7fff_ffff;
export const CHUNK_TAG_SIZE = 16;
/** HKDF-SHA-256 info of the update's key (salt: SHA-256 of the clear header). */
export const UPDATE_KEY_INFO = "ssync-update-v1 key";

/** Plaintext record header: u8 type, u8 flags, u16 0, u32 payload length, u53 offset, u53 length. */
export const UPDATE_RECORD_HEADER_SIZE = 24;
export const UpdateRecordCode = { INFO: 1, DATA: 2, ZERO: 3, END: 4 } as const;
export type UpdateRecordType = keyof typeof UpdateRecordCode;
/** DATA: the payload is one zstd frame decompressing to exactly `length` bytes. */
export const UPDATE_FLAG_ZSTD = 0x01;
/** INFO payload: u8 hash, u8 flags, u16 0, u32 block size, u53 size before, u53 size after, key 32. */
export const UPDATE_INFO_SIZE = 1 + 1 + 2 + 4 + 8 + 8 + HASH_KEY_SIZE;
/** END payload: root before 16 (the signature's), root after 16 (the source's); its length field counts the DATA and ZERO records. */
export const UPDATE_END_SIZE = 2 * DIGEST_SIZE;
/** INFO flag: the update cuts data past the new end (made with --allow-shrink). */
export const INFO_ALLOW_SHRINK = 0x01;

export interface SignatureHeader {
  hash: HashAlgorithm;
  blockSize: number;
  size: number;
  key: Uint8Array;
  hostKey: Uint8Array;
}

export interface UpdateHeader {
  recipient: Uint8Array;
  sender: Uint8Array;
  ephemeral: Uint8Array;
}

export interface UpdateInfo {
  hash: HashAlgorithm;
  blockSize: number;
  sizeBefore: number;
  sizeAfter: number;
  key: Uint8Array;
  allowShrink: boolean;
}

export type UpdateRecord =
  | { type: "INFO"; info: UpdateInfo }
  | { type: "DATA"; offset: number; length: number; zstd: boolean; payload: Uint8Array }
  | { type: "ZERO"; offset: number; length: number }
  /** `ops`: the DATA and ZERO records before it (a count check). */
  | { type: "END"; ops: number; rootBefore: Uint8Array; rootAfter: Uint8Array };

const hashByCode = new Map<number, HashAlgorithm>(Object.entries(HashCode).map(([k, v]) => [v, k as HashAlgorithm]));
const recordByCode = new Map<number, UpdateRecordType>(Object.entries(UpdateRecordCode).map(([k, v]) => [v, k as UpdateRecordType]));

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function setU53(v: DataView, at: number, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`Cannot encode ${n} as a u53`);
  v.setBigUint64(at, BigInt(n));
}

function getU53(v: DataView, at: number, what: string): number {
  const n = v.getBigUint64(at);
  if (n > BigInt(MAX_U53)) throw new OfflineFormatError(`${what}: ${n} exceeds 2^53 - 1`);
  return Number(n);
}

function hashOf(code: number, what: string): HashAlgorithm {
  const h = hashByCode.get(code);
  if (h === undefined) throw new OfflineFormatError(`${what}: unknown hash ${code}`);
  return h;
}

function checkBlockSize(bs: number, what: string): void {
  if (bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) throw new OfflineFormatError(`${what}: bad block size ${bs}`);
}

function hasMagic(b: Uint8Array, magic: readonly number[]): boolean {
  return b.length >= OFFLINE_MAGIC_SIZE && magic.every((m, i) => b[i] === m);
}

/** Number of blocks of a file of `size` bytes. */
export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** Number of ranges of the fixed partition of a file of `size` bytes. */
export function rangeCount(size: number, blockSize: number): number {
  return Math.ceil(blockCount(size, blockSize) / OFFLINE_RANGE_BLOCKS);
}

export function encodeSignatureHeader(h: SignatureHeader): Uint8Array {
  const out = new Uint8Array(SIGNATURE_HEADER_SIZE);
  const v = view(out);
  out.set(SIGNATURE_MAGIC, 0);
  v.setUint16(8, OFFLINE_VERSION);
  out[10] = HashCode[h.hash];
  v.setUint32(12, h.blockSize);
  setU53(v, 16, h.size);
  out.set(h.key, 24);
  out.set(h.hostKey, 24 + HASH_KEY_SIZE);
  return out;
}

export function decodeSignatureHeader(b: Uint8Array): SignatureHeader {
  if (b.length !== SIGNATURE_HEADER_SIZE) throw new OfflineFormatError(`signature header of ${b.length} bytes, not ${SIGNATURE_HEADER_SIZE}`);
  if (!hasMagic(b, SIGNATURE_MAGIC)) throw new OfflineFormatError("not an ssync signature file (bad magic)");
  const v = view(b);
  const version = v.getUint16(8);
  if (version !== OFFLINE_VERSION) throw new OfflineFormatError(`signature version ${version}, this ssync reads version ${OFFLINE_VERSION}`);
  if (b[11] !== 0) throw new OfflineFormatError(`signature: unknown flags ${b[11]}`);
  const blockSize = v.getUint32(12);
  checkBlockSize(blockSize, "signature");
  return {
    hash: hashOf(b[10], "signature"),
    blockSize,
    size: getU53(v, 16, "signature size"),
    key: b.slice(24, 24 + HASH_KEY_SIZE),
    hostKey: b.slice(24 + HASH_KEY_SIZE, SIGNATURE_HEADER_SIZE),
  };
}

/** A range's digest runs in the signature body: u32 length, then the runs (codec.ts encodeRuns). */
export function checkRangeRunsLength(n: number, range: number): void {
  if (n < 5 || n > MAX_RANGE_RUNS_BYTES) throw new OfflineFormatError(`signature range ${range}: ${n} bytes of digest runs is outside [5, ${MAX_RANGE_RUNS_BYTES}]`);
}

export function encodeUpdateHeader(h: UpdateHeader): Uint8Array {
  const out = new Uint8Array(UPDATE_HEADER_SIZE);
  out.set(UPDATE_MAGIC, 0);
  view(out).setUint16(8, OFFLINE_VERSION);
  out.set(h.recipient, 12);
  out.set(h.sender, 12 + PUBLIC_KEY_SIZE);
  out.set(h.ephemeral, 12 + 2 * PUBLIC_KEY_SIZE);
  return out;
}

export function decodeUpdateHeader(b: Uint8Array): UpdateHeader {
  if (b.length !== UPDATE_HEADER_SIZE) throw new OfflineFormatError(`update header of ${b.length} bytes, not ${UPDATE_HEADER_SIZE}`);
  if (!hasMagic(b, UPDATE_MAGIC)) throw new OfflineFormatError("not an ssync update file (bad magic)");
  const v = view(b);
  const version = v.getUint16(8);
  if (version !== OFFLINE_VERSION) throw new OfflineFormatError(`update version ${version}, this ssync reads version ${OFFLINE_VERSION}`);
  if (v.getUint16(10) !== 0) throw new OfflineFormatError(`update: unknown flags ${v.getUint16(10)}`);
  return {
    recipient: b.slice(12, 12 + PUBLIC_KEY_SIZE),
    sender: b.slice(12 + PUBLIC_KEY_SIZE, 12 + 2 * PUBLIC_KEY_SIZE),
    ephemeral: b.slice(12 + 2 * PUBLIC_KEY_SIZE, UPDATE_HEADER_SIZE),
  };
}

/** A chunk word read from the file: the ciphertext length is checked before anything is read into memory. */
export function decodeChunkWord(word: number): { last: boolean; length: number } {
  const length = word & CHUNK_LENGTH_MASK;
  if (length <= CHUNK_TAG_SIZE || length > UPDATE_CHUNK_SIZE + CHUNK_TAG_SIZE) {
    throw new OfflineFormatError(`chunk of ${length} bytes is outside [${CHUNK_TAG_SIZE + 1}, ${UPDATE_CHUNK_SIZE + CHUNK_TAG_SIZE}]`);
  }
  return { last: (word & CHUNK_LAST_FLAG) !== 0, length };
}

/** A record as its header and its payload (DATA's is the caller's bytes, not copied). */
export function encodeRecordParts(r: UpdateRecord): [Uint8Array, Uint8Array] {
  const payload = r.type === "INFO" ? encodeInfo(r.info) : r.type === "DATA" ? r.payload : r.type === "END" ? new Uint8Array([...r.rootBefore, ...r.rootAfter]) : new Uint8Array(0);
  const out = new Uint8Array(UPDATE_RECORD_HEADER_SIZE);
  const v = view(out);
  out[0] = UpdateRecordCode[r.type];
  out[1] = r.type === "DATA" && r.zstd ? UPDATE_FLAG_ZSTD : 0;
  v.setUint32(4, payload.length);
  switch (r.type) {
    case "INFO":
      break;
    case "DATA":
    case "ZERO":
      setU53(v, 8, r.offset);
      setU53(v, 16, r.length);
      break;
    case "END":
      setU53(v, 16, r.ops);
      break;
    default:
      throw new TypeError(`unknown record ${(r satisfies never as UpdateRecord).type}`);
  }
  return [out, payload];
}

/** A record header: what follows it is `payloadLength` bytes (checked ≤ MAX_DATA_LENGTH here, before the caller reads them). */
export interface RecordHead {
  type: UpdateRecordType;
  flags: number;
  payloadLength: number;
  offset: number;
  length: number;
}

export function decodeRecordHead(b: Uint8Array): RecordHead {
  if (b.length !== UPDATE_RECORD_HEADER_SIZE) throw new OfflineFormatError(`record header of ${b.length} bytes`);
  const v = view(b);
  const type = recordByCode.get(b[0]);
  if (type === undefined) throw new OfflineFormatError(`unknown update record type ${b[0]}`);
  const flags = b[1];
  if (v.getUint16(2) !== 0) throw new OfflineFormatError(`${type}: reserved field must be 0`);
  if ((flags & ~(type === "DATA" ? UPDATE_FLAG_ZSTD : 0)) !== 0) throw new OfflineFormatError(`${type}: unknown flags ${flags}`);
  const head = { type, flags, payloadLength: v.getUint32(4), offset: getU53(v, 8, type), length: getU53(v, 16, type) };
  if (head.offset + head.length > MAX_U53) throw new OfflineFormatError(`${type}: offset + length exceeds 2^53 - 1`);
  switch (type) {
    case "INFO":
      if (head.payloadLength !== UPDATE_INFO_SIZE || head.offset !== 0 || head.length !== 0) throw new OfflineFormatError("INFO: malformed");
      break;
    case "DATA": {
      const zstd = (flags & UPDATE_FLAG_ZSTD) !== 0;
      if (head.length === 0 || head.length > MAX_DATA_LENGTH) throw new OfflineFormatError(`DATA of ${head.length} bytes is outside [1, ${MAX_DATA_LENGTH}]`);
      if (zstd ? head.payloadLength === 0 || head.payloadLength > head.length : head.payloadLength !== head.length) {
        throw new OfflineFormatError(`DATA at ${head.offset}: ${head.payloadLength} payload bytes for ${head.length} bytes`);
      }
      break;
    }
    case "ZERO":
      if (head.payloadLength !== 0 || head.length === 0) throw new OfflineFormatError(`ZERO at ${head.offset}: malformed`);
      break;
    case "END":
      if (head.payloadLength !== UPDATE_END_SIZE || head.offset !== 0) throw new OfflineFormatError("END: malformed");
      break;
    default:
      throw new TypeError(`unknown record ${type satisfies never}`);
  }
  return head;
}

/** The record a head and its payload (exactly `head.payloadLength` bytes) make. */
export function decodeRecord(head: RecordHead, payload: Uint8Array): UpdateRecord {
  if (payload.length !== head.payloadLength) throw new OfflineFormatError(`${head.type}: payload of ${payload.length} bytes, expected ${head.payloadLength}`);
  switch (head.type) {
    case "INFO":
      return { type: "INFO", info: decodeInfo(payload) };
    case "DATA":
      return { type: "DATA", offset: head.offset, length: head.length, zstd: (head.flags & UPDATE_FLAG_ZSTD) !== 0, payload };
    case "ZERO":
      return { type: "ZERO", offset: head.offset, length: head.length };
    case "END":
      return { type: "END", ops: head.length, rootBefore: payload.slice(0, DIGEST_SIZE), rootAfter: payload.slice(DIGEST_SIZE) };
    default:
      throw new TypeError(`unknown record ${head.type satisfies never}`);
  }
}

function encodeInfo(i: UpdateInfo): Uint8Array {
  const out = new Uint8Array(UPDATE_INFO_SIZE);
  const v = view(out);
  out[0] = HashCode[i.hash];
  out[1] = i.allowShrink ? INFO_ALLOW_SHRINK : 0;
  v.setUint32(4, i.blockSize);
  setU53(v, 8, i.sizeBefore);
  setU53(v, 16, i.sizeAfter);
  out.set(i.key, 24);
  return out;
}

function decodeInfo(b: Uint8Array): UpdateInfo {
  const v = view(b);
  if ((b[1] & ~INFO_ALLOW_SHRINK) !== 0 || v.getUint16(2) !== 0) throw new OfflineFormatError(`INFO: unknown flags ${b[1]}`);
  const blockSize = v.getUint32(4);
  checkBlockSize(blockSize, "INFO");
  return {
    hash: hashOf(b[0], "INFO"),
    allowShrink: (b[1] & INFO_ALLOW_SHRINK) !== 0,
    blockSize,
    sizeBefore: getU53(v, 8, "INFO size before"),
    sizeAfter: getU53(v, 16, "INFO size after"),
    key: b.slice(24, UPDATE_INFO_SIZE),
  };
}
