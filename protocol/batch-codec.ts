/**
 * encode/decode of batch messages (spec "Batches (protocol 2)") and of the slot prefix.
 *
 * The header is v1's (codec.ts): u16 type, u16 flags, u32 cookie, u64 offset, u64 length,
 * u32 payload length, u32 aux. decode checks, in this order, before allocating anything: the
 * record's length within [HEADER_SIZE, MAX_RECORD] and equal to HEADER_SIZE + payload length;
 * a type this stream carries; flags known for it; unused header fields zero; then the exact
 * payload length and every field's range. Anything else throws ProtocolError (a violation).
 * ACK and ERROR on the control stream are v1's, decoded by codec.ts.
 *
 * Invariant: every encoding is canonical (decode accepts only what encode gives back
 * byte for byte), as in codec.ts: texts are taken as sent, entries in the order sent.
 */
import { decode as decodeV1, encode as encodeV1, ProtocolError } from "./codec.ts";
import {
  BatchMessageCode,
  type BatchMessageType,
  type EntryKind,
  EntryKindCode,
  FLAG_LAST,
  HEADER_SIZE,
  LIST_ENTRY_FIXED,
  MAX_NAME_LENGTH,
  MAX_PAYLOAD,
  MAX_RECORD,
  MessageCode,
  SLOT_PREFIX_SIZE,
} from "./constants.ts";
import type { BatchMessage, BatchOkMessage, ControlMessage, TreeEntry } from "./batch-messages.ts";
import { isWorkFileName } from "./work-file-names.ts";

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const typeByCode = new Map<number, BatchMessageType>(Object.entries(BatchMessageCode).map(([k, v]) => [v, k as BatchMessageType]));
const kindByCode = new Map<number, EntryKind>(Object.entries(EntryKindCode).map(([k, v]) => [v, k as EntryKind]));
const NS_PER_S = 1_000_000_000n;

// ---------------------------------------------------------------- slots

/** The record `message` on `slot`: the u16 slot, then the message (parts stay parts: nothing is copied). */
export function slotRecord(slot: number, message: Uint8Array | readonly Uint8Array[]): Uint8Array[] {
  const prefix = new Uint8Array(SLOT_PREFIX_SIZE);
  prefix[0] = slot >> 8;
  prefix[1] = slot & 0xff;
  return message instanceof Uint8Array ? [prefix, message] : [prefix, ...message];
}

/** The record of exactly SLOT_PREFIX_SIZE bytes that ends `slot`'s session in one direction. */
export function slotEnd(slot: number): Uint8Array {
  return new Uint8Array([slot >> 8, slot & 0xff]);
}

/** The slot a batch record names; a record shorter than the prefix is a violation. */
export function slotOf(record: Uint8Array): number {
  if (record.length < SLOT_PREFIX_SIZE) throw new ProtocolError(`batch record of ${record.length} bytes has no slot`);
  return (record[0] << 8) | record[1];
}

/** The message a batch record carries (empty: the slot's end). */
export function slotMessage(record: Uint8Array): Uint8Array {
  return record.subarray(SLOT_PREFIX_SIZE);
}

/** The u16 type of a message, or -1 for a record too short to have one. */
export function messageCode(message: Uint8Array): number {
  return message.length < 2 ? -1 : (message[0] << 8) | message[1];
}

// ---------------------------------------------------------------- encode

export function encodeBatch(m: BatchMessage | BatchOkMessage): Uint8Array {
  if (m.type === "BATCH") {
    checkU16(m.version, "BATCH version");
    checkU16(m.slots, "BATCH slots");
    const p = new Uint8Array(4);
    view(p).setUint16(0, m.version);
    view(p).setUint16(2, m.slots);
    return record(m.type, 0, { payload: p });
  }
  checkU16(m.slots, "BATCH_OK slots");
  const p = new Uint8Array(2);
  view(p).setUint16(0, m.slots);
  return record(m.type, 0, { payload: p });
}

export function encodeControl(m: ControlMessage): Uint8Array {
  switch (m.type) {
    case "LIST":
    case "MKDIR":
    case "REMOVE":
    case "RMDIR":
      return record(m.type, m.cookie, { payload: utf8.encode(m.name) });
    case "LIST_ENTRIES":
      return record(m.type, m.cookie, { flags: m.last ? FLAG_LAST : 0, aux: m.entries.length, payload: encodeEntries(m.entries) });
    case "ACK":
    case "ERROR":
      return encodeV1(m);
    default:
      return unreachable(m);
  }
}

/** Bytes `entry` takes in a LIST_ENTRIES payload (so a sender can cut chunks at MAX_PAYLOAD). */
export function entrySize(entry: TreeEntry): number {
  return LIST_ENTRY_FIXED + utf8.encode(entry.name).length;
}

function encodeEntries(entries: readonly TreeEntry[]): Uint8Array {
  const names = entries.map((e) => utf8.encode(e.name));
  const p = new Uint8Array(names.reduce((n, b) => n + LIST_ENTRY_FIXED + b.length, 0));
  const v = view(p);
  let at = 0;
  entries.forEach((e, i) => {
    const size = e.kind === "file" ? e.size : 0;
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`${size} is not a u53`);
    v.setUint8(at, EntryKindCode[e.kind]);
    v.setUint32(at + 1, Math.floor(size / 2 ** 32));
    v.setUint32(at + 5, size >>> 0);
    let sec = e.mtimeNs / NS_PER_S;
    if (sec * NS_PER_S > e.mtimeNs) sec -= 1n; // floor: the nanoseconds are never negative
    v.setBigInt64(at + 9, sec);
    v.setUint32(at + 17, Number(e.mtimeNs - sec * NS_PER_S));
    v.setUint16(at + 21, names[i].length);
    p.set(names[i], at + LIST_ENTRY_FIXED);
    at += LIST_ENTRY_FIXED + names[i].length;
  });
  if (p.length > MAX_PAYLOAD) throw new RangeError("LIST_ENTRIES payload too large");
  return p;
}

function record(type: BatchMessageType, cookie: number, f: { flags?: number; aux?: number; payload: Uint8Array }): Uint8Array {
  if (f.payload.length > MAX_PAYLOAD) throw new RangeError(`${type} payload too large`);
  const out = new Uint8Array(HEADER_SIZE + f.payload.length);
  const v = view(out);
  v.setUint16(0, BatchMessageCode[type]);
  v.setUint16(2, f.flags ?? 0);
  v.setUint32(4, cookie);
  v.setUint32(24, f.payload.length);
  v.setUint32(28, f.aux ?? 0);
  out.set(f.payload, HEADER_SIZE);
  return out;
}

// ---------------------------------------------------------------- decode

/** A connection's first record when it is BATCH (the caller checked its type), or BATCH_OK. */
export function decodeBatch(rec: Uint8Array): BatchMessage | BatchOkMessage {
  const h = header(rec);
  const p = rec.subarray(HEADER_SIZE);
  if (h.type === "BATCH") {
    expectEmptyHeader(h);
    expectLength(h.type, p, 4);
    const version = view(p).getUint16(0);
    const slots = view(p).getUint16(2);
    if (slots === 0) throw new ProtocolError("BATCH: 0 slots wanted");
    return { type: "BATCH", cookie: 0, version, slots };
  }
  if (h.type === "BATCH_OK") {
    expectEmptyHeader(h);
    expectLength(h.type, p, 2);
    const slots = view(p).getUint16(0);
    if (slots === 0) throw new ProtocolError("BATCH_OK: 0 slots granted");
    return { type: "BATCH_OK", cookie: 0, slots };
  }
  throw new ProtocolError(`${h.type} is not BATCH or BATCH_OK`);
}

/** A message of the control stream (slot 0), either direction. */
export function decodeControl(rec: Uint8Array): ControlMessage {
  const code = messageCode(rec);
  if (code === MessageCode.ACK || code === MessageCode.ERROR) {
    const m = decodeV1(rec);
    if (m.type !== "ACK" && m.type !== "ERROR") throw new ProtocolError(`${m.type} on the control stream`);
    return m;
  }
  const h = header(rec);
  const p = rec.subarray(HEADER_SIZE);
  switch (h.type) {
    case "LIST":
    case "MKDIR":
    case "REMOVE":
    case "RMDIR": {
      if (h.flags !== 0 || h.aux !== 0) throw new ProtocolError(`${h.type}: flags and aux must be 0`);
      expectNoRange(h);
      if (p.length > MAX_NAME_LENGTH) throw new ProtocolError(`${h.type}: name longer than ${MAX_NAME_LENGTH} bytes`);
      if (h.type !== "LIST" && p.length === 0) throw new ProtocolError(`${h.type}: empty name`);
      return { type: h.type, cookie: h.cookie, name: name(p, h.type) };
    }
    case "LIST_ENTRIES": {
      if ((h.flags & ~FLAG_LAST) !== 0) throw new ProtocolError(`LIST_ENTRIES: unknown flags ${h.flags}`);
      expectNoRange(h);
      const last = (h.flags & FLAG_LAST) !== 0;
      if (!last && h.aux === 0) throw new ProtocolError("LIST_ENTRIES: no entries and not the last");
      return { type: "LIST_ENTRIES", cookie: h.cookie, last, entries: decodeEntries(p, h.aux) };
    }
    case "BATCH":
    case "BATCH_OK":
      throw new ProtocolError(`${h.type} on the control stream`);
    default:
      return unreachable(h.type);
  }
}

function decodeEntries(p: Uint8Array, count: number): TreeEntry[] {
  // Each entry takes at least LIST_ENTRY_FIXED + 1 bytes: a count beyond that is refused before any allocation.
  if (count > Math.floor(p.length / (LIST_ENTRY_FIXED + 1))) throw new ProtocolError(`LIST_ENTRIES: ${count} entries cannot fit ${p.length} bytes`);
  const v = view(p);
  const entries: TreeEntry[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (at + LIST_ENTRY_FIXED > p.length) throw new ProtocolError("LIST_ENTRIES: truncated entry");
    const kind = kindByCode.get(v.getUint8(at));
    if (kind === undefined) throw new ProtocolError(`LIST_ENTRIES: unknown kind ${v.getUint8(at)}`);
    const hi = v.getUint32(at + 1);
    if (hi > 0x1fffff) throw new ProtocolError("LIST_ENTRIES: size beyond 2^53");
    const size = hi * 2 ** 32 + v.getUint32(at + 5);
    if (kind !== "file" && size !== 0) throw new ProtocolError(`LIST_ENTRIES: a ${kind} with a size`);
    const sec = v.getBigInt64(at + 9);
    const ns = v.getUint32(at + 17);
    if (ns >= 1e9) throw new ProtocolError(`LIST_ENTRIES: nanoseconds ${ns} not below 10^9`);
    const length = v.getUint16(at + 21);
    at += LIST_ENTRY_FIXED;
    if (length === 0 || length > MAX_NAME_LENGTH || at + length > p.length) throw new ProtocolError("LIST_ENTRIES: bad name length");
    const text = name(p.subarray(at, at + length), "LIST_ENTRIES");
    checkRelativePath(text);
    at += length;
    entries.push({ kind, size, mtimeNs: sec * NS_PER_S + BigInt(ns), name: text });
  }
  if (at !== p.length) throw new ProtocolError(`LIST_ENTRIES: ${p.length - at} bytes after ${count} entries`);
  return entries;
}

/**
 * An entry's name is a relative path: no leading '/', no empty, "." or ".." component, and no
 * component that names one of ssync's work files (a listener never lists them; a client makes
 * files and folders from these names, and a folder named like a journal would block its file).
 */
function checkRelativePath(text: string): void {
  for (const part of text.split("/")) {
    if (part === "" || part === "." || part === "..") throw new ProtocolError(`LIST_ENTRIES: ${JSON.stringify(text)} is not a relative path`);
    if (isWorkFileName(part)) throw new ProtocolError(`LIST_ENTRIES: ${JSON.stringify(text)} names an ssync work file`);
  }
}

interface Header {
  type: BatchMessageType;
  flags: number;
  cookie: number;
  offsetHi: number;
  offsetLo: number;
  lengthHi: number;
  lengthLo: number;
  aux: number;
}

function header(rec: Uint8Array): Header {
  if (rec.length < HEADER_SIZE || rec.length > MAX_RECORD) {
    throw new ProtocolError(`record of ${rec.length} bytes is outside [${HEADER_SIZE}, ${MAX_RECORD}]`);
  }
  const v = view(rec);
  const code = v.getUint16(0);
  const type = typeByCode.get(code);
  if (type === undefined) throw new ProtocolError(`unknown message type ${code} for a batch`);
  const payloadLength = v.getUint32(24);
  if (HEADER_SIZE + payloadLength !== rec.length) {
    throw new ProtocolError(`${type}: payload length ${payloadLength} does not match record of ${rec.length} bytes`);
  }
  return {
    type,
    flags: v.getUint16(2),
    cookie: v.getUint32(4),
    offsetHi: v.getUint32(8),
    offsetLo: v.getUint32(12),
    lengthHi: v.getUint32(16),
    lengthLo: v.getUint32(20),
    aux: v.getUint32(28),
  };
}

function expectNoRange(h: Header): void {
  if ((h.offsetHi | h.offsetLo | h.lengthHi | h.lengthLo) !== 0) throw new ProtocolError(`${h.type}: offset and length must be 0`);
}

function expectEmptyHeader(h: Header): void {
  expectNoRange(h);
  if (h.flags !== 0 || h.cookie !== 0 || h.aux !== 0) throw new ProtocolError(`${h.type}: flags, cookie and aux must be 0`);
}

function expectLength(type: string, p: Uint8Array, n: number): void {
  if (p.length !== n) throw new ProtocolError(`${type}: payload of ${p.length} bytes, expected ${n}`);
}

function name(bytes: Uint8Array, what: string): string {
  let s: string;
  try {
    s = strictUtf8.decode(bytes);
  } catch {
    throw new ProtocolError(`${what}: name is not valid UTF-8`);
  }
  if (s.includes("\0")) throw new ProtocolError(`${what}: name contains NUL`);
  return s;
}

function checkU16(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`${what} ${n} is not a u16`);
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function unreachable(x: never): never {
  throw new Error(`unhandled ${JSON.stringify(x)}`);
}

