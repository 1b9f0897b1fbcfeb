/**
 * Fuzzing the message decoder: random valid messages round-trip exactly; mutated and random
 * records either decode to a message that re-encodes to the very same bytes (the encoding is
 * canonical) or are refused with a ProtocolError, never anything else.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decode, encode, maskedPageBytes, ProtocolError } from "../../protocol/codec.ts";
import {
  DIGEST_SIZE,
  ErrorCode,
  type ErrorName,
  HashCode,
  type HashAlgorithm,
  HEADER_SIZE,
  MAX_DATA_LENGTH,
  MAX_ERROR_MESSAGE,
  MAX_RECORD,
  MAX_REFINE_LENGTH,
  MessageCode,
  SUB_BLOCK_SIZE,
} from "../../protocol/constants.ts";
import type { Message } from "../../protocol/messages.ts";
import { decodeBatch, decodeControl, encodeBatch, encodeControl, entrySize } from "../../protocol/batch-codec.ts";
import type { BatchMessage, BatchOkMessage, ControlMessage, TreeEntry } from "../../protocol/batch-messages.ts";
import { BatchMessageCode, EntryKindCode, type EntryKind, MAX_PAYLOAD } from "../../protocol/constants.ts";
import { forEachSeed, fuzzIterations, type Random } from "./random.ts";

const CHARS = ["a", "Z", "0", "/", ".", "-", " ", "é", "ß", "日", "\u{1F600}", "\uFEFF", "\n", "\u202e"];

function text(rng: Random, maxBytes: number): string {
  let s = "";
  const n = rng.range(1, 40);
  for (let i = 0; i < n; i++) {
    const next = s + rng.pick(CHARS);
    if (new TextEncoder().encode(next).length > maxBytes) break;
    s = next;
  }
  return s || "x";
}

function range(rng: Random): { offset: number; length: number } {
  const offset = rng.u53();
  const length = Math.max(1, Math.min(rng.u53(), Number.MAX_SAFE_INTEGER - offset));
  return offset + length > Number.MAX_SAFE_INTEGER || length < 1 ? { offset: 0, length: 1 } : { offset, length };
}

function digests(rng: Random, count?: number): Uint8Array {
  const blocks = count ?? (rng.chance(0.05) ? rng.range(1, 16384) : rng.range(1, 40));
  const out = new Uint8Array(blocks * DIGEST_SIZE);
  for (let b = 0; b < blocks; b++) {
    if (rng.chance(0.4)) continue; // an all-zero block
    const d = rng.bytes(DIGEST_SIZE);
    if (d.every((x) => x === 0)) d[15] = 1;
    out.set(d, b * DIGEST_SIZE);
  }
  return out;
}

/** A range for REFINE, SUB_DIGESTS, PATCH: at most MAX_REFINE_LENGTH bytes, mostly short. */
function refineRange(rng: Random): { offset: number; length: number } {
  const r = range(rng);
  const length = Math.min(r.length, rng.chance(0.05) ? MAX_REFINE_LENGTH : rng.range(1, 70_000));
  return { offset: r.offset, length };
}

/** A random message that obeys the wire rules (§3). */
export function randomMessage(rng: Random): Message {
  const cookie = rng.chance(0.2) ? rng.pick([0, 1, 2 ** 32 - 1]) : rng.int(2 ** 32);
  const type = rng.pick(Object.keys(MessageCode) as Message["type"][]);
  switch (type) {
    case "OPEN":
      return {
        type, cookie,
        version: rng.chance(0.8) ? 1 : rng.int(65536),
        mode: rng.pick(["push", "pull"] as const),
        hash: rng.pick(Object.keys(HashCode) as HashAlgorithm[]),
        blockSize: rng.chance(0.8) ? 2 ** rng.range(12, 20) : rng.int(2 ** 32),
        dryRun: rng.chance(0.5),
        clientZstd: rng.chance(0.5),
        ...(rng.chance(0.5) ? { refine: true } : {}),
        size: rng.u53(),
        key: rng.bytes(32),
        name: text(rng, 4096),
      };
    case "OPEN_OK":
      return { type, cookie, size: rng.u53(), zstd: rng.chance(0.5), kind: rng.pick(["file", "block-device"] as const), ...(rng.chance(0.5) ? { refine: true } : {}) };
    case "REFINE":
      return { type, cookie, ...refineRange(rng) };
    case "SUB_DIGESTS": {
      const r = refineRange(rng);
      return { type, cookie, ...r, digests: digests(rng, Math.ceil(r.length / SUB_BLOCK_SIZE)) };
    }
    case "PATCH": {
      const r = refineRange(rng);
      const pages = Math.ceil(r.length / SUB_BLOCK_SIZE);
      const data = new Uint8Array(Math.ceil(pages / 8));
      const zeros = new Uint8Array(data.length);
      for (let i = 0; i < pages; i++) {
        const k = rng.int(3);
        if (k === 1) data[i >> 3] |= 1 << (i & 7);
        if (k === 2) zeros[i >> 3] |= 1 << (i & 7);
      }
      if (data.every((x) => x === 0) && zeros.every((x) => x === 0)) zeros[0] = 1;
      const dataBytes = maskedPageBytes(data, r.length);
      if (dataBytes === 0) return { type, cookie, ...r, data, zeros, payload: new Uint8Array(0), zstd: false };
      const kind = rng.int(3);
      if (kind === 0) return { type, cookie, ...r, data, zeros, payload: rng.bytes(dataBytes), zstd: false };
      if (kind === 1) return { type, cookie, ...r, data, zeros, payload: rng.bytes(rng.range(1, Math.min(dataBytes, 3000))), zstd: true };
      return { type, cookie, ...r, data, zeros, payload: undefined, zstd: false };
    }
    case "SIGS":
    case "ZERO":
    case "RANGE_DONE":
      return { type, cookie, ...range(rng) };
    case "SIGS_REPLY":
    case "READ_DIFF":
      return { type, cookie, ...range(rng), digests: digests(rng) };
    case "DATA": {
      const r = range(rng);
      const length = Math.min(r.length, rng.chance(0.05) ? MAX_DATA_LENGTH : rng.range(1, 3000));
      const kind = rng.int(3);
      if (kind === 0) return { type, cookie, offset: r.offset, length, payload: rng.bytes(length), zstd: false };
      if (kind === 1) return { type, cookie, offset: r.offset, length, payload: rng.bytes(rng.range(1, length)), zstd: true };
      return { type, cookie, offset: r.offset, length, payload: undefined, zstd: false };
    }
    case "FLUSH":
    case "ACK":
      return { type, cookie };
    case "COMMIT":
      return { type, cookie, root: rng.bytes(16) };
    case "COMMIT_OK":
      return { type, cookie, root: rng.bytes(16), counters: { bytesRead: rng.u53(), holeBytesSkipped: rng.u53(), bytesWritten: rng.u53(), bytesPunched: rng.u53() } };
    case "ERROR":
      return { type, cookie, code: rng.pick(Object.keys(ErrorCode) as ErrorName[]), message: rng.chance(0.1) ? "" : text(rng, MAX_ERROR_MESSAGE) };
    default:
      throw new Error(`no generator for ${type satisfies never}`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** decode(rec) is a message that re-encodes to `rec`, or a ProtocolError; anything else fails. */
function checkRecord(rec: Uint8Array, what: string): "accepted" | "refused" {
  let m: Message;
  try {
    m = decode(rec);
  } catch (e) {
    assert.ok(e instanceof ProtocolError, `${what}: decode threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
    return "refused";
  }
  const again = encode(m);
  assert.ok(sameBytes(again, rec), `${what}: ${m.type} decoded from ${rec.length} bytes re-encodes to other bytes`);
  return "accepted";
}

function mutate(rng: Random, rec: Uint8Array): Uint8Array {
  let r: Uint8Array = rec.slice();
  for (let k = rng.range(1, 4); k > 0; k--) {
    switch (rng.int(7)) {
      case 0: // flip a bit, often in the header
        if (r.length > 0) {
          const at = rng.chance(0.7) ? rng.int(Math.min(r.length, HEADER_SIZE + 8)) : rng.int(r.length);
          r[at] ^= 1 << rng.int(8);
        }
        break;
      case 1:
        if (r.length > 0) r[rng.int(r.length)] = rng.pick([0, 1, 0x7f, 0x80, 0xff, rng.int(256)]);
        break;
      case 2:
        r = r.subarray(0, rng.int(r.length + 1));
        break;
      case 3: {
        const extra = rng.bytes(rng.range(1, 40));
        const out = new Uint8Array(r.length + extra.length);
        out.set(r);
        out.set(extra, r.length);
        r = out;
        break;
      }
      case 4: // keep the payload length consistent with the record, to get past the first check
        if (r.length >= HEADER_SIZE) new DataView(r.buffer, r.byteOffset).setUint32(24, r.length - HEADER_SIZE);
        break;
      case 5: // another type code over the same body
        if (r.length >= 2) new DataView(r.buffer, r.byteOffset).setUint16(0, rng.range(0, 15));
        break;
      default: // a header field at a boundary
        if (r.length >= HEADER_SIZE) {
          const v = new DataView(r.buffer, r.byteOffset);
          const field = rng.pick([2, 8, 12, 16, 20, 28]);
          v.setUint32(field, rng.pick([0, 1, 0x1fffff, 0x200000, 0xffffffff, rng.int(2 ** 32)]));
        }
    }
  }
  return r;
}

const ITERATIONS = fuzzIterations(3000);

test("fuzz: random valid messages round-trip exactly", { timeout: 60_000 }, async () => {
  await forEachSeed({ iterations: ITERATIONS, firstSeed: 1000, name: "codec round trip" }, (rng) => {
    const m = randomMessage(rng);
    const rec = encode(m);
    assert.ok(rec.length <= MAX_RECORD);
    assert.deepEqual(decode(rec), m);
    assert.equal(checkRecord(rec, m.type), "accepted");
  });
});

test("fuzz: mutated and random records decode canonically or throw ProtocolError", { timeout: 60_000 }, async () => {
  const outcomes = { accepted: 0, refused: 0 };
  await forEachSeed({ iterations: ITERATIONS, firstSeed: 2000, name: "codec mutation" }, (rng) => {
    const m = randomMessage(rng);
    outcomes[checkRecord(mutate(rng, encode(m)), `mutated ${m.type}`)]++;
    // Random bytes: often with a known type and a consistent payload length.
    const rec = rng.bytes(rng.chance(0.2) ? rng.int(HEADER_SIZE + 1) : HEADER_SIZE + rng.int(80));
    if (rec.length >= HEADER_SIZE && rng.chance(0.7)) {
      const v = new DataView(rec.buffer);
      v.setUint16(0, rng.range(1, 13));
      v.setUint16(2, rng.chance(0.7) ? 0 : rng.int(4));
      v.setUint32(24, rec.length - HEADER_SIZE);
      if (rng.chance(0.7)) for (const at of [8, 16]) v.setUint32(at, 0);
      if (rng.chance(0.5)) v.setUint32(28, 0);
    }
    outcomes[checkRecord(rec, "random record")]++;
  });
  // Both branches ran: the mutations are not all trivially refused.
  assert.ok(outcomes.accepted > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
});

// ---------------------------------------------------------------- batches (spec "Batches")

const KINDS = Object.keys(EntryKindCode) as EntryKind[];

/** A relative path of 1–4 components, as LIST_ENTRIES carries. */
function relativePath(rng: Random): string {
  const parts: string[] = [];
  for (let n = rng.range(1, 4); n > 0; n--) {
    let p = text(rng, 24).replaceAll("/", "_");
    if (p === "." || p === "..") p = "x";
    parts.push(p);
  }
  return parts.join("/");
}

function randomEntry(rng: Random): TreeEntry {
  const kind = rng.pick(KINDS);
  const sec = BigInt(rng.range(0, 2 ** 31)) * (rng.chance(0.1) ? -1n : 1n);
  return { kind, size: kind === "file" ? rng.u53() : 0, mtimeNs: sec * 1_000_000_000n + BigInt(rng.int(1e9)), name: relativePath(rng) };
}

export function randomControlMessage(rng: Random): ControlMessage {
  const cookie = rng.int(2 ** 32);
  switch (rng.int(7)) {
    case 0:
      return { type: "LIST", cookie, name: rng.chance(0.2) ? "" : text(rng, 200) };
    case 1:
      return { type: "MKDIR", cookie, name: text(rng, 200) };
    case 2:
      return { type: "REMOVE", cookie, name: text(rng, 200) };
    case 3:
      return { type: "RMDIR", cookie, name: text(rng, 200) };
    case 4: {
      const entries: TreeEntry[] = [];
      let bytes = 0;
      for (let n = rng.chance(0.01) ? 2000 : rng.int(8); n > 0; n--) {
        const e = randomEntry(rng);
        if (bytes + entrySize(e) > MAX_PAYLOAD) break;
        bytes += entrySize(e);
        entries.push(e);
      }
      return { type: "LIST_ENTRIES", cookie, last: entries.length === 0 || rng.chance(0.5), entries };
    }
    case 5:
      return { type: "ACK", cookie };
    default:
      return { type: "ERROR", cookie, code: rng.pick(Object.keys(ErrorCode) as ErrorName[]), message: text(rng, MAX_ERROR_MESSAGE) };
  }
}

function randomBatchOpen(rng: Random): BatchMessage | BatchOkMessage {
  return rng.chance(0.5)
    ? { type: "BATCH", cookie: 0, version: rng.chance(0.8) ? 2 : rng.int(65536), slots: rng.range(1, 65535) }
    : { type: "BATCH_OK", cookie: 0, slots: rng.range(1, 65535) };
}

/** decodeControl / decodeBatch accept only what re-encodes to the same bytes, else ProtocolError. */
function checkBatchRecord(rec: Uint8Array, what: string, which: "control" | "open"): "accepted" | "refused" {
  let again: Uint8Array;
  try {
    again = which === "control" ? encodeControl(decodeControl(rec)) : encodeBatch(decodeBatch(rec));
  } catch (e) {
    assert.ok(e instanceof ProtocolError, `${what}: decode threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
    return "refused";
  }
  assert.ok(sameBytes(again, rec), `${what}: decoded from ${rec.length} bytes, re-encodes to other bytes`);
  return "accepted";
}

test("fuzz: batch messages round-trip exactly; v1 decode refuses every one of them", { timeout: 60_000 }, async () => {
  await forEachSeed({ iterations: ITERATIONS, firstSeed: 3000, name: "batch codec round trip" }, (rng) => {
    const m = randomControlMessage(rng);
    const rec = encodeControl(m);
    assert.ok(rec.length <= MAX_RECORD);
    assert.deepEqual(decodeControl(rec), m);
    assert.equal(checkBatchRecord(rec, m.type, "control"), "accepted");
    const open = randomBatchOpen(rng);
    const orec = encodeBatch(open);
    assert.deepEqual(decodeBatch(orec), open);
    // A v1 session never takes a batch message: inside a slot, LIST or BATCH is a violation.
    for (const r of m.type === "ACK" || m.type === "ERROR" ? [orec] : [rec, orec]) assert.throws(() => decode(r), ProtocolError);
  });
});

test("fuzz: mutated batch records decode canonically or throw ProtocolError", { timeout: 60_000 }, async () => {
  const outcomes = { accepted: 0, refused: 0 };
  const codes = Object.values(BatchMessageCode);
  await forEachSeed({ iterations: ITERATIONS, firstSeed: 4000, name: "batch codec mutation" }, (rng) => {
    const m = randomControlMessage(rng);
    const rec = mutate(rng, encodeControl(m));
    // The mutator's type codes are v1's: half the time, put a batch type back.
    if (rec.length >= 2 && rng.chance(0.5)) new DataView(rec.buffer, rec.byteOffset).setUint16(0, rng.pick([...codes, 12, 13]));
    outcomes[checkBatchRecord(rec, `mutated ${m.type}`, "control")]++;
    const open = mutate(rng, encodeBatch(randomBatchOpen(rng)));
    if (open.length >= 2 && rng.chance(0.7)) new DataView(open.buffer, open.byteOffset).setUint16(0, rng.pick([17, 18]));
    outcomes[checkBatchRecord(open, "mutated BATCH", "open")]++;
  });
  assert.ok(outcomes.accepted > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
});

test("LIST_ENTRIES refuses names that are not relative paths, kinds with sizes, and counts beyond the payload", () => {
  const entry = { kind: "file" as const, size: 5, mtimeNs: 1n, name: "a/b" };
  const good = encodeControl({ type: "LIST_ENTRIES", cookie: 1, last: true, entries: [entry] });
  assert.deepEqual(decodeControl(good), { type: "LIST_ENTRIES", cookie: 1, last: true, entries: [entry] });
  for (const name of ["/a", "a//b", "a/../b", "..", ".", "a/", "a/./b"]) {
    assert.throws(() => decodeControl(encodeControl({ type: "LIST_ENTRIES", cookie: 1, last: true, entries: [{ ...entry, name }] })), ProtocolError, name);
  }
  const folderWithSize = good.slice();
  folderWithSize[32] = EntryKindCode.folder;
  assert.throws(() => decodeControl(folderWithSize), ProtocolError);
  const tooMany = good.slice();
  new DataView(tooMany.buffer).setUint32(28, 2);
  assert.throws(() => decodeControl(tooMany), ProtocolError);
  // Not the last and empty: nothing to say.
  assert.throws(() => decodeControl(encodeControl({ type: "LIST_ENTRIES", cookie: 1, last: false, entries: [] })), ProtocolError);
});
