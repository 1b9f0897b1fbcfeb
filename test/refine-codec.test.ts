/**
 * The refinement messages (REFINE, SUB_DIGESTS, PATCH) and the OPEN_REFINE / CAP_REFINE
 * bits: canonical round trips and every malformed shape rejected before use; sub-digests
 * are domain-separated from block digests and keep the zero rule; the PATCH the source
 * builds; RefinePolicy turns round trips off when they stop paying.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { decode, encode, ProtocolError } from "../protocol/codec.ts";
import { DIGEST_SIZE, HEADER_SIZE, MAX_REFINE_LENGTH, OPEN_REFINE, SUB_BLOCK_SIZE } from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";
import { createBlockHasher } from "../src/engine/block-hash.ts";
import { createSubBlockHasher, subDigests } from "../src/engine/sub-digests.ts";
import { refineRun } from "../src/engine/refine-job.ts";
import { RefinePolicy } from "../src/engine/refine-policy.ts";

const PAGE = SUB_BLOCK_SIZE;
const KEY = new Uint8Array(32).fill(7);

const samples: Message[] = [
  { type: "REFINE", cookie: 9, offset: 65536, length: 2 * 65536 },
  { type: "SUB_DIGESTS", cookie: 9, offset: 65536, length: 65536 + 100, digests: new Uint8Array(17 * DIGEST_SIZE).fill(3, 16) },
  { type: "PATCH", cookie: 4, offset: 0, length: 65536, data: Uint8Array.of(0b101, 0), zeros: Uint8Array.of(0b10, 0x80), payload: new Uint8Array(randomBytes(2 * PAGE)), zstd: false },
  { type: "PATCH", cookie: 4, offset: 0, length: 65536, data: Uint8Array.of(1, 0), zeros: new Uint8Array(2), payload: undefined, zstd: false },
  { type: "PATCH", cookie: 4, offset: 0, length: 65536, data: new Uint8Array(2), zeros: Uint8Array.of(0, 1), payload: new Uint8Array(0), zstd: false },
  { type: "PATCH", cookie: 4, offset: 0, length: 1234, data: Uint8Array.of(1), zeros: new Uint8Array(1), payload: new Uint8Array(randomBytes(1234)), zstd: false },
];

function patched(rec: Uint8Array, at: number, bytes: number[]): Uint8Array {
  const out = rec.slice();
  out.set(bytes, at);
  return out;
}

describe("refinement codec", () => {
  test("REFINE, SUB_DIGESTS and PATCH round-trip", () => {
    for (const m of samples) assert.deepEqual(decode(encode(m)), m, m.type);
  });

  test("OPEN_REFINE and CAP_REFINE are carried only when set", () => {
    const open: Message = {
      type: "OPEN", cookie: 1, version: 1, mode: "push", hash: "poly1305", blockSize: 65536, dryRun: false, clientZstd: true,
      refine: true, size: 10, key: new Uint8Array(32), name: "x",
    };
    const rec = encode(open);
    assert.equal(new DataView(rec.buffer).getUint32(HEADER_SIZE + 8) & OPEN_REFINE, OPEN_REFINE);
    assert.deepEqual(decode(rec), open);
    const { refine: _, ...without } = open;
    assert.deepEqual(decode(encode(without as Message)), without);
    const ok: Message = { type: "OPEN_OK", cookie: 1, size: 5, zstd: true, kind: "file", refine: true };
    assert.deepEqual(decode(encode(ok)), ok);
  });

  test("malformed refinement records are rejected", () => {
    const refine = encode(samples[0]);
    const sub = encode(samples[1]);
    const patch = encode(samples[2]);
    const bad: [string, Uint8Array][] = [
      ["REFINE longer than MAX_REFINE_LENGTH", patched(refine, 16, [0, 0, 0, 0, 0, 0x20, 0, 0])],
      ["REFINE with a payload", encodeRaw(14, { offset: 0, length: 65536, payload: new Uint8Array(1) })],
      ["REFINE with flags", patched(refine, 2, [0, 1])],
      ["SUB_DIGESTS with a wrong page count", patched(sub, 28, [0, 0, 0, 16])],
      ["PATCH with overlapping masks", encodePatch(65536, [1, 0], [1, 0], new Uint8Array(PAGE))],
      ["PATCH with a mask bit past the last page", encodePatch(1234, [2], [0], new Uint8Array(0))],
      ["PATCH with no page", encodePatch(65536, [0, 0], [0, 0], new Uint8Array(0))],
      ["PATCH with too few bytes", encodePatch(65536, [3, 0], [0, 0], new Uint8Array(PAGE))],
      ["PATCH with too many bytes", encodePatch(65536, [1, 0], [0, 0], new Uint8Array(PAGE + 1))],
      ["PATCH shorter than its masks", encodeRaw(16, { offset: 0, length: 65536, payload: new Uint8Array(3) })],
      ["PATCH NO_PAYLOAD with bytes", patched(patch, 2, [0, 2])],
      ["PATCH unknown flag", patched(patch, 2, [0, 4])],
      ["PATCH longer than MAX_REFINE_LENGTH", encodePatch(MAX_REFINE_LENGTH + 65536, [1, ...new Array(271).fill(0)], new Array(272).fill(0), new Uint8Array(PAGE))],
    ];
    for (const [what, rec] of bad) assert.throws(() => decode(rec), ProtocolError, what);
  });
});

/** A record of `code` with the given header fields and payload, bypassing encode's checks. */
function encodeRaw(code: number, f: { offset: number; length: number; payload: Uint8Array; flags?: number }): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + f.payload.length);
  const v = new DataView(out.buffer);
  v.setUint16(0, code);
  v.setUint16(2, f.flags ?? 0);
  v.setUint32(4, 1);
  v.setBigUint64(8, BigInt(f.offset));
  v.setBigUint64(16, BigInt(f.length));
  v.setUint32(24, f.payload.length);
  out.set(f.payload, HEADER_SIZE);
  return out;
}

function encodePatch(length: number, data: number[], zeros: number[], bytes: Uint8Array): Uint8Array {
  const payload = new Uint8Array(data.length + zeros.length + bytes.length);
  payload.set(data, 0);
  payload.set(zeros, data.length);
  payload.set(bytes, data.length + zeros.length);
  return encodeRaw(16, { offset: 0, length, payload });
}

describe("sub-digests", () => {
  test("a page's sub-digest differs from the digest of the same bytes as a block (poly1305 domain)", async () => {
    const page = randomBytes(PAGE);
    const block = await createBlockHasher("poly1305", KEY);
    const sub = await createSubBlockHasher("poly1305", KEY);
    const a = new Uint8Array(DIGEST_SIZE);
    const b = new Uint8Array(DIGEST_SIZE);
    block(page, a, 0, 5);
    sub(page, b, 0, 5);
    assert.notDeepEqual(a, b);
  });

  test("zero pages have the zero sub-digest, others never; equal pages at the same index agree", async () => {
    for (const alg of ["poly1305", "hmac-sha256", "blake3", "xxh128"] as const) {
      const h = await createSubBlockHasher(alg, KEY);
      const data = new Uint8Array(4 * PAGE);
      data[PAGE + 17] = 1;
      data.set(randomBytes(PAGE), 3 * PAGE);
      const d = subDigests(h, data, 65536);
      assert.ok(d.subarray(0, DIGEST_SIZE).every((x) => x === 0), alg);
      assert.ok(d.subarray(DIGEST_SIZE, 2 * DIGEST_SIZE).some((x) => x !== 0), alg);
      assert.ok(d.subarray(2 * DIGEST_SIZE, 3 * DIGEST_SIZE).every((x) => x === 0), alg);
      assert.deepEqual(subDigests(h, data, 65536), d, alg);
    }
  });

  test("refineRun: blocks held as zeros go as their non-zero pages, blocks held with data as REFINE", () => {
    const bs = 65536;
    const raw = new Uint8Array(3 * bs);
    raw.set(randomBytes(PAGE), 2 * PAGE); // block 0: one page
    raw.set(randomBytes(bs), bs); // block 1: every page
    raw.set(randomBytes(PAGE), 2 * bs); // block 2: held with data at the destination
    const dst = new Uint8Array(3 * DIGEST_SIZE);
    dst.fill(9, 2 * DIGEST_SIZE);
    const pack = (r: Uint8Array, offset: number) => ({ kind: "data" as const, offset, length: r.length, payload: r.slice(), zstd: false });
    const ops = refineRun(raw, { offset: 0, blockSize: bs, dst, first: 0, pack, packRun: (r, offset) => [pack(r, offset)] });
    assert.deepEqual(ops.map((o) => [o.kind, o.offset, o.length]), [["patch", 0, 2 * bs], ["refine", 2 * bs, bs]]);
    const p = ops[0];
    assert.ok(p.kind === "patch");
    assert.equal(p.dataBytes, PAGE + bs);
    assert.deepEqual(Array.from(p.data), [0b100, 0, 0xff, 0xff]);
    assert.deepEqual(p.payload!.subarray(0, PAGE), raw.subarray(2 * PAGE, 3 * PAGE));
  });
});

describe("RefinePolicy", () => {
  test("round trips stay on while refining saves ≥ 1/8 of the bytes, go off (with probes) when blocks change whole", () => {
    const p = new RefinePolicy();
    for (let i = 0; i < 100; i++) p.learn(65536, 4096); // single pages: refinement pays
    assert.equal(Array.from({ length: 32 }, () => p.roundTrips()).every(Boolean), true);
    for (let i = 0; i < 100; i++) p.learn(65536, 65536); // whole blocks: it does not
    const asked = Array.from({ length: 32 }, () => p.roundTrips()).filter(Boolean).length;
    assert.equal(asked, 2, "one probe in 16 jobs");
    for (let i = 0; i < 100; i++) p.learn(65536, 0); // pays again
    assert.equal(p.roundTrips(), true);
  });
});
