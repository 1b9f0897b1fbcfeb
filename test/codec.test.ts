/** protocol/codec: round trips, and every malformed record rejected before use. */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { decode, encode, ProtocolError } from "../protocol/codec.ts";
import {
  CAP_METADATA,
  HEADER_SIZE,
  MAX_RANGE_BLOCKS,
  MAX_RECORD,
  METADATA_SIZE,
  OPEN_ALLOW_SHRINK,
  OPEN_CLIENT_ZSTD,
  OPEN_COMPRESS_ALWAYS,
  OPEN_DRY_RUN,
  OPEN_METADATA,
} from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";

const digests = new Uint8Array(5 * 16);
digests.fill(7, 16, 48); // blocks 1 and 2 have data, 0, 3, 4 are zero

const samples: Message[] = [
  { type: "OPEN", cookie: 1, version: 1, mode: "push", hash: "hmac-sha256", blockSize: 65536, dryRun: true, clientZstd: true, size: 2 ** 40 + 3, key: new Uint8Array(32).fill(9), name: "vms/ä.img" },
  { type: "OPEN_OK", cookie: 1, size: 12345, zstd: true, kind: "block-device" },
  { type: "SIGS", cookie: 2, offset: 65536, length: 5 * 65536 },
  { type: "SIGS_REPLY", cookie: 2, offset: 65536, length: 5 * 65536, digests },
  { type: "READ_DIFF", cookie: 3, offset: 0, length: 5 * 65536 - 10, digests },
  { type: "DATA", cookie: 4, offset: 0, length: 3, payload: new Uint8Array([1, 2, 3]), zstd: false },
  { type: "DATA", cookie: 4, offset: 0, length: 300, payload: new Uint8Array([1, 2]), zstd: true },
  { type: "DATA", cookie: 4, offset: 0, length: 300, payload: undefined, zstd: false },
  { type: "ZERO", cookie: 5, offset: 2 ** 50, length: 2 ** 40 },
  { type: "RANGE_DONE", cookie: 6, offset: 0, length: 1 },
  { type: "FLUSH", cookie: 7 },
  { type: "COMMIT", cookie: 8, root: new Uint8Array(16).fill(1) },
  { type: "COMMIT_OK", cookie: 8, root: new Uint8Array(16).fill(2), counters: { bytesRead: 1, holeBytesSkipped: 2 ** 45, bytesWritten: 3, bytesPunched: 4 } },
  { type: "ACK", cookie: 9 },
  { type: "ERROR", cookie: 10, code: "EBUSY", message: "Cannot lock x: another ssync is writing it" },
];

function patch(rec: Uint8Array, at: number, bytes: number[]): Uint8Array {
  const r = rec.slice();
  r.set(bytes, at);
  return r;
}

describe("codec", { timeout: 10_000 }, () => {
  test("every message type round-trips", () => {
    for (const m of samples) assert.deepEqual(decode(encode(m)), m, m.type);
  });

  test("OPEN carries the client's capabilities: OPEN_CLIENT_ZSTD", () => {
    const open = samples[0] as Extract<Message, { type: "OPEN" }>;
    for (const [dryRun, clientZstd] of [[false, false], [false, true], [true, false], [true, true]]) {
      const rec = encode({ ...open, dryRun, clientZstd });
      const flags = new DataView(rec.buffer, rec.byteOffset).getUint32(HEADER_SIZE + 8);
      assert.equal(flags, (dryRun ? OPEN_DRY_RUN : 0) | (clientZstd ? OPEN_CLIENT_ZSTD : 0));
      assert.deepEqual(decode(rec), { ...open, dryRun, clientZstd });
    }
    const always = encode({ ...open, mode: "pull", clientZstd: true, compressAlways: true });
    assert.equal(new DataView(always.buffer, always.byteOffset).getUint32(HEADER_SIZE + 8), OPEN_DRY_RUN | OPEN_CLIENT_ZSTD | OPEN_COMPRESS_ALWAYS);
    assert.deepEqual(decode(always), { ...open, mode: "pull", clientZstd: true, compressAlways: true });
    const shrink = encode({ ...open, dryRun: false, clientZstd: false, allowShrink: true });
    assert.equal(new DataView(shrink.buffer, shrink.byteOffset).getUint32(HEADER_SIZE + 8), OPEN_ALLOW_SHRINK);
    assert.equal(OPEN_ALLOW_SHRINK, 0x0020);
    assert.deepEqual(decode(shrink), { ...open, dryRun: false, clientZstd: false, allowShrink: true });
  });

  test("zero runs are compact: 16384 hole blocks cost a few bytes", () => {
    const rec = encode({ type: "SIGS_REPLY", cookie: 1, offset: 0, length: MAX_RANGE_BLOCKS * 65536, digests: new Uint8Array(MAX_RANGE_BLOCKS * 16) });
    assert.equal(rec.length, HEADER_SIZE + 5);
  });

  test("malformed records are rejected", () => {
    const ack = encode({ type: "ACK", cookie: 1 });
    const data = encode(samples[5]);
    const sigs = encode(samples[3]);
    const bad: [string, Uint8Array][] = [
      ["short record", ack.subarray(0, 31)],
      ["oversized record", new Uint8Array(MAX_RECORD + 1)],
      ["unknown type", patch(ack, 0, [0, 99])],
      ["unknown flag", patch(ack, 2, [0, 1])],
      ["DATA unknown flag", patch(data, 2, [0, 4])],
      ["payload length mismatch", patch(ack, 24, [0, 0, 0, 1])],
      ["ACK with offset", patch(ack, 15, [1])],
      ["reserved aux", patch(ack, 31, [1])],
      ["offset beyond 2^53", patch(data, 8, [0x00, 0x20])],
      ["DATA raw length mismatch", patch(data, 23, [4])],
      ["DATA too long", patch(data, 16, [0, 0, 0, 0, 0, 0x20])],
      ["runs short of the block count", patch(sigs, 31, [6])],
      ["block count above the cap", patch(sigs, 28, [0, 0, 0x40, 1])],
      ["unknown ERROR code", patch(encode(samples[14]), 28, [0, 0, 0, 200])],
      ["empty range", encode({ type: "ZERO", cookie: 1, offset: 0, length: 1 }).map((b, i) => (i === 23 ? 0 : b))],
    ];
    for (const [what, rec] of bad) assert.throws(() => decode(rec), ProtocolError, what);
    const open = encode(samples[0]);
    assert.throws(() => decode(patch(open, HEADER_SIZE + 2, [9])), ProtocolError, "unknown mode");
    assert.throws(() => decode(patch(open, HEADER_SIZE + 8, [0x80])), ProtocolError, "unknown open flag");
    assert.throws(() => decode(open.subarray(0, open.length - 1)), ProtocolError, "truncated name");
  });
});

describe("codec: METADATA (OPEN_METADATA, CAP_METADATA)", { timeout: 10_000 }, () => {
  const open = samples[0] as Extract<Message, { type: "OPEN" }>;
  const ok = samples[1] as Extract<Message, { type: "OPEN_OK" }>;
  const mtimeNs = 1577934245_123456789n; // 2020-01-02 03:04:05.123456789 UTC
  const flagsOf = (rec: Uint8Array) => new DataView(rec.buffer, rec.byteOffset).getUint32(HEADER_SIZE + 8);

  test("a push OPEN carries the source's attributes in a trailer after the name; a pull OPEN only the flag", () => {
    const plain = encode(open);
    const push = { ...open, metadata: { mode: 0o4755, mtimeNs, owner: { uid: 1000, gid: 2 ** 32 - 1 } } };
    const rec = encode(push);
    assert.equal(rec.length, plain.length + METADATA_SIZE);
    assert.equal(flagsOf(rec), flagsOf(plain) | OPEN_METADATA);
    assert.deepEqual(decode(rec), push);
    for (const metadata of [{}, { mode: 0o640 }, { mtimeNs: -1n }, { mtimeNs: 0n }, { owner: { uid: 0, gid: 0 } }]) {
      assert.deepEqual(decode(encode({ ...open, metadata })), { ...open, metadata }, JSON.stringify(metadata, (_, v) => typeof v === "bigint" ? String(v) : v));
    }
    const pull = { ...open, mode: "pull" as const, metadata: {} };
    const pullRec = encode(pull);
    assert.equal(pullRec.length, plain.length, "no trailer in a pull");
    assert.equal(flagsOf(pullRec) & OPEN_METADATA, OPEN_METADATA);
    assert.deepEqual(decode(pullRec), pull);
    assert.throws(() => encode({ ...pull, metadata: { mode: 0o600 } }), RangeError);
  });

  test("the mtime is exact to the nanosecond, before 1970 too", () => {
    for (const ns of [mtimeNs, -1n, -1_000_000_000n, -1_500_000_001n, 2n ** 62n, 999_999_999n]) {
      const m = { ...ok, metadata: { mtimeNs: ns } };
      assert.deepEqual(decode(encode(m)), m, String(ns));
    }
  });

  test("OPEN_OK carries CAP_METADATA and a trailer; without the capability, its exact old length", () => {
    const plain = encode(ok);
    const m = { ...ok, metadata: { mode: 0o600, mtimeNs } };
    const rec = encode(m);
    assert.equal(rec.length, plain.length + METADATA_SIZE);
    assert.equal(new DataView(rec.buffer, rec.byteOffset).getUint32(HEADER_SIZE + 8) & CAP_METADATA, CAP_METADATA);
    assert.deepEqual(decode(rec), m);
    assert.deepEqual(decode(encode({ ...ok, metadata: {} })), { ...ok, metadata: {} });
  });

  test("malformed trailers are violations", () => {
    const push = encode({ ...open, metadata: { mode: 0o640, mtimeNs } });
    const t = push.length - METADATA_SIZE; // the trailer's offset in the record
    const okRec = encode({ ...ok, metadata: { mode: 0o640 } });
    const u = okRec.length - METADATA_SIZE;
    const bad: [string, Uint8Array][] = [
      ["unknown attribute bit", patch(push, t + 3, [0x0b])],
      ["mode above 0o7777", patch(push, t + 4, [0, 0, 0x10, 0])],
      ["nanoseconds of 10^9", patch(push, t + 16, [0x3b, 0x9a, 0xca, 0x00])],
      ["an owner without META_OWNER", patch(push, t + 23, [1])],
      ["a mode without META_MODE", patch(okRec, u + 3, [0])],
      ["an mtime without META_MTIME", patch(okRec, u + 15, [1])],
      ["a push OPEN_METADATA without its trailer", push.subarray(0, t).map((b, i) => (i === 27 ? b - METADATA_SIZE : b))],
      ["OPEN_METADATA flag missing: the trailer is junk after the name", patch(push, HEADER_SIZE + 11, [flagsOf(push) & ~OPEN_METADATA & 0xff])],
      ["CAP_METADATA without its trailer", okRec.subarray(0, u).map((b, i) => (i === 27 ? b - METADATA_SIZE : b))],
      ["a trailer without CAP_METADATA", patch(okRec, HEADER_SIZE + 11, [0x01])],
    ];
    for (const [what, rec] of bad) assert.throws(() => decode(rec), ProtocolError, what);
    // A pull OPEN with a trailer is too long.
    const pull = encode({ ...open, mode: "pull", metadata: {} });
    const longer = new Uint8Array(pull.length + METADATA_SIZE);
    longer.set(pull);
    new DataView(longer.buffer).setUint32(24, pull.length + METADATA_SIZE - HEADER_SIZE);
    assert.throws(() => decode(longer), ProtocolError, "pull OPEN with a trailer");
  });
});
