/**
 * encode/decode of protocol messages. The only code that touches byte layouts.
 *
 * decode checks, in this order, before allocating anything: record length within
 * [HEADER_SIZE, MAX_RECORD] and equal to HEADER_SIZE + payloadLength; known type;
 * flags known for that type; header fields unused by the type are zero; then the
 * type's exact payload length and field ranges. Anything else throws ProtocolError,
 * which is fatal for the session.
 *
 * Invariant: every encoding is canonical: decode accepts a record only if encode of the
 * message it returns gives back exactly those bytes (digest runs are maximal, texts are
 * kept as sent), so two implementations agree on what each record means.
 */
import {
  CAP_CACHE_KEY,
  CAP_METADATA,
  CAP_REFINE,
  CAP_ZSTD,
  CAPS_KNOWN,
  DIGEST_SIZE,
  ErrorCode,
  type ErrorName,
  COMMIT_OK_SIZE,
  FLAG_NO_PAYLOAD,
  FLAG_ZSTD,
  HASH_KEY_SIZE,
  HashCode,
  type HashAlgorithm,
  HEADER_SIZE,
  KindCode,
  MAX_DATA_LENGTH,
  MAX_ERROR_MESSAGE,
  MAX_NAME_LENGTH,
  MAX_PAYLOAD,
  MAX_RANGE_BLOCKS,
  MAX_RECORD,
  MAX_REFINE_LENGTH,
  MAX_META_MODE,
  MAX_U53,
  META_KNOWN,
  META_MODE,
  META_MTIME,
  META_OWNER,
  METADATA_SIZE,
  MessageCode,
  type MessageType,
  type Mode,
  ModeCode,
  OPEN_ALLOW_SHRINK,
  OPEN_CLIENT_ZSTD,
  OPEN_COMPRESS_ALWAYS,
  OPEN_DRY_RUN,
  OPEN_FLAGS_KNOWN,
  OPEN_IN_PLACE,
  OPEN_CACHE_KEY,
  OPEN_METADATA,
  OPEN_REFINE,
  RUN_DIGESTS,
  RUN_ZERO,
  SUB_BLOCK_SIZE,
} from "./constants.ts";
import type { DataMessage, FileAttributes, Message, OpenMessage, StoreKind } from "./messages.ts";

/** A record that breaks the wire format. Fatal: the connection closes. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

const OPEN_FIXED = 2 + 1 + 1 + 4 + 4 + 8 + HASH_KEY_SIZE + 2;
const OPEN_OK_SIZE = 8 + 4 + 1;
const ROOT_SIZE = DIGEST_SIZE;

const typeByCode = new Map<number, MessageType>(
  Object.entries(MessageCode).map(([k, v]) => [v, k as MessageType]),
);
const modeByCode = invert(ModeCode);
const hashByCode = invert(HashCode);
const kindByCode = invert(KindCode);
const errorByCode = invert(ErrorCode);
const utf8 = new TextEncoder();
// ignoreBOM: a leading U+FEFF is kept, so every accepted text re-encodes to the same bytes.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function invert<K extends string>(table: Record<K, number>): Map<number, K> {
  return new Map(Object.entries(table).map(([k, v]) => [v as number, k as K]));
}

interface Header {
  type: MessageType;
  flags: number;
  cookie: number;
  offset: number;
  length: number;
  aux: number;
}

// ---------------------------------------------------------------- encode

export function encode(msg: Message): Uint8Array {
  switch (msg.type) {
    case "OPEN": {
      const name = utf8.encode(msg.name);
      const trailer = openTrailer(msg);
      const p = new Uint8Array(OPEN_FIXED + name.length + (trailer ? METADATA_SIZE : 0));
      const v = view(p);
      v.setUint16(0, msg.version);
      v.setUint8(2, ModeCode[msg.mode]);
      v.setUint8(3, HashCode[msg.hash]);
      v.setUint32(4, msg.blockSize);
      v.setUint32(
        8,
        (msg.dryRun ? OPEN_DRY_RUN : 0) | (msg.clientZstd ? OPEN_CLIENT_ZSTD : 0) | (msg.inPlace ? OPEN_IN_PLACE : 0) |
          (msg.refine ? OPEN_REFINE : 0) | (msg.compressAlways ? OPEN_COMPRESS_ALWAYS : 0) |
          (msg.allowShrink ? OPEN_ALLOW_SHRINK : 0) | (msg.metadata ? OPEN_METADATA : 0) | (msg.cacheKey ? OPEN_CACHE_KEY : 0),
      );
      setU64(v, 12, msg.size);
      p.set(msg.key, 20);
      v.setUint16(20 + HASH_KEY_SIZE, name.length);
      p.set(name, OPEN_FIXED);
      if (trailer) encodeMetadata(trailer, p.subarray(OPEN_FIXED + name.length));
      return record(msg, { payload: p });
    }
    case "OPEN_OK": {
      const meta = msg.metadata ? METADATA_SIZE : 0;
      if (msg.cacheKey && msg.cacheKey.length !== HASH_KEY_SIZE) throw new RangeError(`OPEN_OK: a cache key of ${msg.cacheKey.length} bytes`);
      const p = new Uint8Array(OPEN_OK_SIZE + meta + (msg.cacheKey ? HASH_KEY_SIZE : 0));
      const v = view(p);
      setU64(v, 0, msg.size);
      v.setUint32(
        8,
        (msg.zstd ? CAP_ZSTD : 0) | (msg.refine ? CAP_REFINE : 0) | (msg.metadata ? CAP_METADATA : 0) | (msg.cacheKey ? CAP_CACHE_KEY : 0),
      );
      v.setUint8(12, KindCode[msg.kind]);
      if (msg.metadata) encodeMetadata(msg.metadata, p.subarray(OPEN_OK_SIZE));
      if (msg.cacheKey) p.set(msg.cacheKey, OPEN_OK_SIZE + meta);
      return record(msg, { payload: p });
    }
    case "SIGS":
    case "ZERO":
    case "RANGE_DONE":
    case "REFINE":
      return record(msg, { offset: msg.offset, length: msg.length });
    case "PATCH": {
      const m = msg.data.length;
      const bytes = msg.payload ?? new Uint8Array(0);
      const p = new Uint8Array(2 * m + bytes.length);
      p.set(msg.data, 0);
      p.set(msg.zeros, m);
      p.set(bytes, 2 * m);
      return record(msg, {
        offset: msg.offset,
        length: msg.length,
        flags: msg.payload === undefined ? FLAG_NO_PAYLOAD : msg.zstd ? FLAG_ZSTD : 0,
        payload: p,
      });
    }
    case "SIGS_REPLY":
    case "READ_DIFF":
    case "SUB_DIGESTS":
      return record(msg, {
        offset: msg.offset,
        length: msg.length,
        aux: msg.digests.length / DIGEST_SIZE,
        payload: encodeRuns(msg.digests),
      });
    case "DATA":
      return record(msg, dataFields(msg));
    case "FLUSH":
    case "ACK":
      return record(msg, {});
    case "COMMIT":
      return record(msg, { payload: msg.root });
    case "COMMIT_OK": {
      const p = new Uint8Array(COMMIT_OK_SIZE);
      p.set(msg.root);
      const v = view(p);
      const c = msg.counters;
      [c.bytesRead, c.holeBytesSkipped, c.bytesWritten, c.bytesPunched].forEach((n, i) => setU64(v, ROOT_SIZE + 8 * i, n));
      return record(msg, { payload: p });
    }
    case "ERROR": {
      let text = utf8.encode(msg.message);
      if (text.length > MAX_ERROR_MESSAGE) text = utf8.encode(truncateUtf8(msg.message));
      return record(msg, { aux: ErrorCode[msg.code], payload: text });
    }
    default:
      return unreachable(msg);
  }
}

/**
 * encode(msg) without copying a DATA or PATCH payload: [header, payload] for a DATA that has
 * one, [header ‖ masks, payload] for a PATCH that has one (the payload is the message's own
 * buffer), else encode(msg) itself. The parts back to back are exactly encode(msg) (a
 * RecordChannel seals them without concatenating).
 */
export function encodeParts(msg: Message): Uint8Array | [Uint8Array, Uint8Array] {
  if (msg.type === "PATCH" && msg.payload !== undefined && msg.payload.length > 0) {
    const m = msg.data.length;
    if (2 * m + msg.payload.length > MAX_PAYLOAD) throw new RangeError("PATCH payload too large");
    const head = new Uint8Array(HEADER_SIZE + 2 * m);
    const flags = msg.zstd ? FLAG_ZSTD : 0;
    writeHeader(head, msg, { offset: msg.offset, length: msg.length, flags }, 2 * m + msg.payload.length);
    head.set(msg.data, HEADER_SIZE);
    head.set(msg.zeros, HEADER_SIZE + m);
    return [head, msg.payload];
  }
  if (msg.type !== "DATA" || msg.payload === undefined || msg.payload.length === 0) return encode(msg);
  const f = dataFields(msg);
  const header = new Uint8Array(HEADER_SIZE);
  writeHeader(header, msg, f, checkedPayload(msg, f.payload).length);
  return [header, msg.payload];
}

/** OPEN's METADATA trailer: push only (a pull's OPEN_METADATA asks, with `metadata` {}). */
function openTrailer(msg: OpenMessage): FileAttributes | undefined {
  if (!msg.metadata || msg.mode === "push") return msg.metadata;
  if (Object.keys(msg.metadata).length > 0) throw new RangeError("OPEN: a pull carries no METADATA trailer");
  return undefined;
}

/** The METADATA_SIZE bytes of `a` at the start of `out` (zeros where an attribute is absent). */
function encodeMetadata(a: FileAttributes, out: Uint8Array): void {
  const v = view(out);
  v.setUint32(0, (a.mode !== undefined ? META_MODE : 0) | (a.mtimeNs !== undefined ? META_MTIME : 0) | (a.owner ? META_OWNER : 0));
  const mode = a.mode ?? 0;
  if (!Number.isInteger(mode) || mode < 0 || mode > MAX_META_MODE) throw new RangeError(`mode ${mode} is not in [0, 0o7777]`);
  v.setUint32(4, mode);
  const ns = a.mtimeNs ?? 0n;
  let sec = ns / NS_PER_S;
  if (sec * NS_PER_S > ns) sec -= 1n; // floor: the nanoseconds are never negative
  v.setBigInt64(8, sec);
  v.setUint32(16, Number(ns - sec * NS_PER_S));
  v.setUint32(20, a.owner?.uid ?? 0);
  v.setUint32(24, a.owner?.gid ?? 0);
}

const NS_PER_S = 1_000_000_000n;

/** A METADATA trailer: known attrs bits, mode ≤ 0o7777, ns < 10^9, and zeros for every attribute absent. */
function decodeMetadata(p: Uint8Array, what: string): FileAttributes {
  const v = view(p);
  const attrs = v.getUint32(0);
  if ((attrs & ~META_KNOWN) !== 0) throw new ProtocolError(`${what}: unknown METADATA attributes ${attrs}`);
  const mode = v.getUint32(4);
  const sec = v.getBigInt64(8);
  const nsec = v.getUint32(16);
  const uid = v.getUint32(20);
  const gid = v.getUint32(24);
  if (mode > MAX_META_MODE) throw new ProtocolError(`${what}: METADATA mode ${mode} above 0o7777`);
  if (nsec >= 1e9) throw new ProtocolError(`${what}: METADATA nanoseconds ${nsec} not below 10^9`);
  if (!(attrs & META_MODE) && mode !== 0) throw new ProtocolError(`${what}: METADATA mode without META_MODE`);
  if (!(attrs & META_MTIME) && (sec !== 0n || nsec !== 0)) throw new ProtocolError(`${what}: METADATA mtime without META_MTIME`);
  if (!(attrs & META_OWNER) && (uid !== 0 || gid !== 0)) throw new ProtocolError(`${what}: METADATA owner without META_OWNER`);
  return {
    ...(attrs & META_MODE ? { mode } : {}),
    ...(attrs & META_MTIME ? { mtimeNs: sec * NS_PER_S + BigInt(nsec) } : {}),
    ...(attrs & META_OWNER ? { owner: { uid, gid } } : {}),
  };
}

type Fields = { offset?: number; length?: number; flags?: number; aux?: number; payload?: Uint8Array };

function dataFields(msg: DataMessage): Fields {
  return {
    offset: msg.offset,
    length: msg.length,
    flags: msg.payload === undefined ? FLAG_NO_PAYLOAD : msg.zstd ? FLAG_ZSTD : 0,
    payload: msg.payload,
  };
}

function checkedPayload(msg: Message, payload: Uint8Array | undefined): Uint8Array {
  const p = payload ?? new Uint8Array(0);
  if (p.length > MAX_PAYLOAD) throw new RangeError(`${msg.type} payload too large`);
  return p;
}

function record(msg: Message, f: Fields): Uint8Array {
  const payload = checkedPayload(msg, f.payload);
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  writeHeader(out, msg, f, payload.length);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** The HEADER_SIZE header bytes at the start of `out`. */
function writeHeader(out: Uint8Array, msg: Message, f: Fields, payloadLength: number): void {
  const v = view(out);
  v.setUint16(0, MessageCode[msg.type]);
  v.setUint16(2, f.flags ?? 0);
  v.setUint32(4, msg.cookie);
  setU64(v, 8, f.offset ?? 0);
  setU64(v, 16, f.length ?? 0);
  v.setUint32(24, payloadLength);
  v.setUint32(28, f.aux ?? 0);
}

/** Digests (DIGEST_SIZE bytes per block, zeros = all-zero block) → runs. */
export function encodeRuns(digests: Uint8Array): Uint8Array {
  const blocks = digests.length / DIGEST_SIZE;
  const parts: Uint8Array[] = [];
  let size = 0;
  let i = 0;
  while (i < blocks) {
    const zero = isZeroDigest(digests, i);
    let j = i + 1;
    while (j < blocks && isZeroDigest(digests, j) === zero) j++;
    const head = new Uint8Array(5);
    head[0] = zero ? RUN_ZERO : RUN_DIGESTS;
    view(head).setUint32(1, j - i);
    parts.push(head);
    size += 5;
    if (!zero) {
      parts.push(digests.subarray(i * DIGEST_SIZE, j * DIGEST_SIZE));
      size += (j - i) * DIGEST_SIZE;
    }
    i = j;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function isZeroDigest(digests: Uint8Array, index: number): boolean {
  const base = index * DIGEST_SIZE;
  for (let k = 0; k < DIGEST_SIZE; k++) if (digests[base + k] !== 0) return false;
  return true;
}

function truncateUtf8(s: string): string {
  while (utf8.encode(s).length > MAX_ERROR_MESSAGE - 3) s = s.slice(0, Math.floor(s.length * 0.9));
  return s + "...";
}

// ---------------------------------------------------------------- decode

export function decode(rec: Uint8Array): Message {
  if (rec.length < HEADER_SIZE || rec.length > MAX_RECORD) {
    throw new ProtocolError(`record of ${rec.length} bytes is outside [${HEADER_SIZE}, ${MAX_RECORD}]`);
  }
  const v = view(rec);
  const code = v.getUint16(0);
  const type = typeByCode.get(code);
  if (type === undefined) throw new ProtocolError(`unknown message type ${code}`);
  const payloadLength = v.getUint32(24);
  if (HEADER_SIZE + payloadLength !== rec.length) {
    throw new ProtocolError(`${type}: payload length ${payloadLength} does not match record of ${rec.length} bytes`);
  }
  const h: Header = {
    type,
    flags: v.getUint16(2),
    cookie: v.getUint32(4),
    offset: getU64(v, 8, type),
    length: getU64(v, 16, type),
    aux: v.getUint32(28),
  };
  if (h.offset + h.length > MAX_U53) throw new ProtocolError(`${type}: range end beyond 2^53`);
  const payload = rec.subarray(HEADER_SIZE);
  return decodeBody(h, payload);
}

function decodeBody(h: Header, p: Uint8Array): Message {
  const { type, cookie } = h;
  switch (type) {
    case "OPEN": {
      expectHeader(h, { flags: 0, range: false, aux: false });
      if (p.length < OPEN_FIXED) throw new ProtocolError(`OPEN: payload of ${p.length} bytes is too short`);
      const v = view(p);
      const nameLength = v.getUint16(20 + HASH_KEY_SIZE);
      const openFlags = v.getUint32(8);
      if ((openFlags & ~OPEN_FLAGS_KNOWN) !== 0) throw new ProtocolError(`OPEN: unknown flags ${openFlags}`);
      const mode = lookup(modeByCode, v.getUint8(2), "OPEN mode") as Mode;
      // Push with OPEN_METADATA: the METADATA trailer follows the name.
      const trailer = (openFlags & OPEN_METADATA) !== 0 && mode === "push" ? METADATA_SIZE : 0;
      if (p.length !== OPEN_FIXED + nameLength + trailer) throw new ProtocolError("OPEN: name length does not match payload");
      if (nameLength === 0 || nameLength > MAX_NAME_LENGTH) throw new ProtocolError("OPEN: bad name length");
      const name = text(p.subarray(OPEN_FIXED, OPEN_FIXED + nameLength), "OPEN name");
      if (name.includes("\0")) throw new ProtocolError("OPEN: name contains NUL");
      return {
        type,
        cookie,
        version: v.getUint16(0),
        mode,
        hash: lookup(hashByCode, v.getUint8(3), "OPEN hash") as HashAlgorithm,
        blockSize: v.getUint32(4),
        dryRun: (openFlags & OPEN_DRY_RUN) !== 0,
        clientZstd: (openFlags & OPEN_CLIENT_ZSTD) !== 0,
        ...((openFlags & OPEN_IN_PLACE) !== 0 ? { inPlace: true } : {}),
        ...((openFlags & OPEN_REFINE) !== 0 ? { refine: true } : {}),
        ...((openFlags & OPEN_COMPRESS_ALWAYS) !== 0 ? { compressAlways: true } : {}),
        ...((openFlags & OPEN_ALLOW_SHRINK) !== 0 ? { allowShrink: true } : {}),
        ...((openFlags & OPEN_CACHE_KEY) !== 0 ? { cacheKey: true } : {}),
        size: getU64(v, 12, type),
        key: p.slice(20, 20 + HASH_KEY_SIZE),
        name,
        ...((openFlags & OPEN_METADATA) !== 0 ? { metadata: trailer ? decodeMetadata(p.subarray(OPEN_FIXED + nameLength), type) : {} } : {}),
      };
    }
    case "OPEN_OK": {
      expectHeader(h, { flags: 0, range: false, aux: false });
      if (p.length < OPEN_OK_SIZE) expectLength(type, p, OPEN_OK_SIZE);
      const v = view(p);
      const caps = v.getUint32(8);
      if ((caps & ~CAPS_KNOWN) !== 0) throw new ProtocolError(`OPEN_OK: unknown capabilities ${caps}`);
      const withMetadata = (caps & CAP_METADATA) !== 0;
      const withCacheKey = (caps & CAP_CACHE_KEY) !== 0;
      const meta = withMetadata ? METADATA_SIZE : 0;
      expectLength(type, p, OPEN_OK_SIZE + meta + (withCacheKey ? HASH_KEY_SIZE : 0));
      return {
        type,
        cookie,
        size: getU64(v, 0, type),
        zstd: (caps & CAP_ZSTD) !== 0,
        kind: lookup(kindByCode, v.getUint8(12), "OPEN_OK kind") as StoreKind,
        ...((caps & CAP_REFINE) !== 0 ? { refine: true } : {}),
        ...(withMetadata ? { metadata: decodeMetadata(p.subarray(OPEN_OK_SIZE, OPEN_OK_SIZE + meta), type) } : {}),
        ...(withCacheKey ? { cacheKey: p.slice(OPEN_OK_SIZE + meta) } : {}),
      };
    }
    case "SIGS":
    case "ZERO":
    case "RANGE_DONE":
      expectHeader(h, { flags: 0, range: true, aux: false });
      expectLength(type, p, 0);
      return { type, cookie, offset: h.offset, length: h.length };
    case "SIGS_REPLY":
    case "READ_DIFF": {
      expectHeader(h, { flags: 0, range: true, aux: true });
      if (h.aux === 0 || h.aux > MAX_RANGE_BLOCKS) throw new ProtocolError(`${type}: ${h.aux} blocks outside [1, ${MAX_RANGE_BLOCKS}]`);
      return { type, cookie, offset: h.offset, length: h.length, digests: decodeRuns(p, h.aux, type) };
    }
    case "DATA": {
      expectHeader(h, { flags: FLAG_ZSTD | FLAG_NO_PAYLOAD, range: true, aux: false });
      if (h.length > MAX_DATA_LENGTH) throw new ProtocolError(`DATA: length ${h.length} above ${MAX_DATA_LENGTH}`);
      const zstd = (h.flags & FLAG_ZSTD) !== 0;
      if (h.flags & FLAG_NO_PAYLOAD) {
        if (zstd || p.length !== 0) throw new ProtocolError("DATA: NO_PAYLOAD with a payload or ZSTD");
        return { type, cookie, offset: h.offset, length: h.length, payload: undefined, zstd };
      }
      if (zstd ? p.length === 0 || p.length > h.length : p.length !== h.length) {
        throw new ProtocolError(`DATA: payload of ${p.length} bytes for length ${h.length}`);
      }
      return { type, cookie, offset: h.offset, length: h.length, payload: p, zstd };
    }
    case "FLUSH":
    case "ACK":
      expectHeader(h, { flags: 0, range: false, aux: false });
      expectLength(type, p, 0);
      return { type, cookie };
    case "REFINE":
      expectHeader(h, { flags: 0, range: true, aux: false });
      expectRefineLength(h);
      expectLength(type, p, 0);
      return { type, cookie, offset: h.offset, length: h.length };
    case "SUB_DIGESTS": {
      expectHeader(h, { flags: 0, range: true, aux: true });
      expectRefineLength(h);
      const pages = Math.ceil(h.length / SUB_BLOCK_SIZE);
      if (h.aux !== pages) throw new ProtocolError(`SUB_DIGESTS: ${h.aux} sub-digests for ${pages} pages`);
      return { type, cookie, offset: h.offset, length: h.length, digests: decodeRuns(p, pages, type) };
    }
    case "PATCH":
      expectHeader(h, { flags: FLAG_ZSTD | FLAG_NO_PAYLOAD, range: true, aux: false });
      expectRefineLength(h);
      return decodePatch(h, p);
    case "COMMIT":
      expectHeader(h, { flags: 0, range: false, aux: false });
      expectLength(type, p, ROOT_SIZE);
      return { type, cookie, root: p.slice() };
    case "COMMIT_OK": {
      expectHeader(h, { flags: 0, range: false, aux: false });
      expectLength(type, p, COMMIT_OK_SIZE);
      const v = view(p);
      const [bytesRead, holeBytesSkipped, bytesWritten, bytesPunched] = [0, 1, 2, 3].map((i) =>
        getU64(v, ROOT_SIZE + 8 * i, type)
      );
      return { type, cookie, root: p.slice(0, ROOT_SIZE), counters: { bytesRead, holeBytesSkipped, bytesWritten, bytesPunched } };
    }
    case "ERROR": {
      expectHeader(h, { flags: 0, range: false, aux: true });
      if (p.length > MAX_ERROR_MESSAGE) throw new ProtocolError("ERROR: message too long");
      const code = lookup(errorByCode, h.aux, "ERROR code") as ErrorName;
      return { type, cookie, code, message: text(p, "ERROR message") };
    }
    default:
      return unreachable(type);
  }
}

function expectRefineLength(h: Header): void {
  if (h.length > MAX_REFINE_LENGTH) throw new ProtocolError(`${h.type}: length ${h.length} above ${MAX_REFINE_LENGTH}`);
}

/** Bytes of the pages a mask selects in a run of `length` bytes (only the file's last page may be short). */
export function maskedPageBytes(mask: Uint8Array, length: number): number {
  let n = 0;
  for (let i = 0; i < mask.length * 8; i++) {
    if (mask[i >> 3] & (1 << (i & 7))) n += Math.min(SUB_BLOCK_SIZE, length - i * SUB_BLOCK_SIZE);
  }
  return n;
}

/** PATCH payload: data mask ‖ zeros mask (⌈pages/8⌉ bytes each: disjoint, no bit past the last page, not both empty) ‖ bytes. */
function decodePatch(h: Header, p: Uint8Array): Message {
  const pages = Math.ceil(h.length / SUB_BLOCK_SIZE);
  const m = Math.ceil(pages / 8);
  if (p.length < 2 * m) throw new ProtocolError(`PATCH: payload of ${p.length} bytes is shorter than its masks`);
  const data = p.slice(0, m);
  const zeros = p.slice(m, 2 * m);
  let any = 0;
  for (let i = 0; i < m; i++) {
    if (data[i] & zeros[i]) throw new ProtocolError("PATCH: a page is both data and zeros");
    any |= data[i] | zeros[i];
  }
  const spare = pages % 8 === 0 ? 0 : 0xff << (pages % 8) & 0xff;
  if ((data[m - 1] | zeros[m - 1]) & spare) throw new ProtocolError("PATCH: a mask bit lies past the last page");
  if (any === 0) throw new ProtocolError("PATCH: no page changes");
  const dataBytes = maskedPageBytes(data, h.length);
  const rest = p.subarray(2 * m);
  const zstd = (h.flags & FLAG_ZSTD) !== 0;
  if (h.flags & FLAG_NO_PAYLOAD) {
    if (zstd || rest.length !== 0 || dataBytes === 0) throw new ProtocolError("PATCH: NO_PAYLOAD with bytes, ZSTD or no data pages");
    return { type: "PATCH", cookie: h.cookie, offset: h.offset, length: h.length, data, zeros, payload: undefined, zstd };
  }
  if (zstd ? rest.length === 0 || rest.length > dataBytes : rest.length !== dataBytes) {
    throw new ProtocolError(`PATCH: ${rest.length} bytes for ${dataBytes} bytes of data pages`);
  }
  return { type: "PATCH", cookie: h.cookie, offset: h.offset, length: h.length, data, zeros, payload: rest, zstd };
}

/** Runs → digests of exactly `blocks` blocks. Runs are maximal: two in a row never share a kind. */
export function decodeRuns(p: Uint8Array, blocks: number, what: string): Uint8Array {
  const out = new Uint8Array(blocks * DIGEST_SIZE);
  const v = view(p);
  let at = 0;
  let block = 0;
  let previous = -1;
  while (at < p.length) {
    if (at + 5 > p.length) throw new ProtocolError(`${what}: truncated run header`);
    const kind = p[at];
    if (kind === previous) throw new ProtocolError(`${what}: two runs of kind ${kind} in a row`);
    previous = kind;
    const count = v.getUint32(at + 1);
    at += 5;
    if (count === 0 || count > blocks - block) throw new ProtocolError(`${what}: run of ${count} blocks overflows the range`);
    if (kind === RUN_DIGESTS) {
      const bytes = count * DIGEST_SIZE;
      if (at + bytes > p.length) throw new ProtocolError(`${what}: truncated digest run`);
      out.set(p.subarray(at, at + bytes), block * DIGEST_SIZE);
      for (let i = block; i < block + count; i++) {
        if (isZeroDigest(out, i)) throw new ProtocolError(`${what}: zero digest inside a digest run`);
      }
      at += bytes;
    } else if (kind !== RUN_ZERO) {
      throw new ProtocolError(`${what}: unknown run kind ${kind}`);
    }
    block += count;
  }
  if (block !== blocks) throw new ProtocolError(`${what}: runs cover ${block} of ${blocks} blocks`);
  return out;
}

function expectHeader(h: Header, allowed: { flags: number; range: boolean; aux: boolean }): void {
  if ((h.flags & ~allowed.flags) !== 0) throw new ProtocolError(`${h.type}: unknown flags ${h.flags}`);
  if (!allowed.range && (h.offset !== 0 || h.length !== 0)) throw new ProtocolError(`${h.type}: offset and length must be 0`);
  if (allowed.range && h.length === 0) throw new ProtocolError(`${h.type}: empty range`);
  if (!allowed.aux && h.aux !== 0) throw new ProtocolError(`${h.type}: reserved field must be 0`);
}

function expectLength(type: MessageType, p: Uint8Array, n: number): void {
  if (p.length !== n) throw new ProtocolError(`${type}: payload of ${p.length} bytes, expected ${n}`);
}

function lookup<K>(table: Map<number, K>, code: number, what: string): K {
  const k = table.get(code);
  if (k === undefined) throw new ProtocolError(`unknown ${what} ${code}`);
  return k;
}

function text(bytes: Uint8Array, what: string): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new ProtocolError(`${what} is not valid UTF-8`);
  }
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function setU64(v: DataView, at: number, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${n} is not a u53`);
  v.setUint32(at, Math.floor(n / 2 ** 32));
  v.setUint32(at + 4, n >>> 0);
}

function getU64(v: DataView, at: number, type: MessageType): number {
  const hi = v.getUint32(at);
  if (hi > 0x1fffff) throw new ProtocolError(`${type}: 64-bit field beyond 2^53`);
  return hi * 2 ** 32 + v.getUint32(at + 4);
}

function unreachable(x: never): never {
  throw new Error(`unhandled ${JSON.stringify(x)}`);
}
