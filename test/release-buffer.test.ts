import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { releaseBuffer } from "../src/util/release-buffer.ts";

/** releaseBuffer (src/util/release-buffer.ts) detaches only a buffer its view spans exactly. */

test("a view of its whole buffer is released: every view of it reads empty", () => {
  const whole = new Uint8Array(1 << 20).fill(1);
  const alias = new Uint8Array(whole.buffer);
  assert.equal(releaseBuffer(whole), true);
  assert.equal(whole.length, 0);
  assert.equal(alias.length, 0);
  assert.equal(whole.buffer.byteLength, 0);
  assert.equal(releaseBuffer(whole), false, "a detached buffer is left alone");
});

test("a subarray of a larger buffer is never released, wherever it lies", () => {
  const big = new Uint8Array(1 << 20).fill(7);
  const views = [
    big.subarray(0, big.length - 1), // starts at 0, ends early
    big.subarray(1), // ends at the end, starts late
    big.subarray(4096, 8192),
    big.subarray(0, 0),
  ];
  for (const v of views) assert.equal(releaseBuffer(v), false);
  assert.equal(big.length, 1 << 20);
  assert.equal(big[0], 7);
  assert.equal(big[big.length - 1], 7);
  // A small Buffer lives in Node's shared pool: it is a subarray too.
  const pooled = Buffer.from("pooled bytes");
  assert.equal(releaseBuffer(pooled), pooled.byteOffset === 0 && pooled.buffer.byteLength === pooled.length);
});

test("headBytes: a payload behind its record's header releases the record, nothing else does", () => {
  const record = new Uint8Array(32 + 1000).fill(3);
  assert.equal(releaseBuffer(record.subarray(32, 1031), { headBytes: 32 }), false, "not up to the end");
  assert.equal(releaseBuffer(record.subarray(16), { headBytes: 32 }), false, "not at headBytes");
  assert.equal(releaseBuffer(record.subarray(32)), false, "without headBytes, a tail is a subarray");
  assert.equal(record.length, 1032);
  assert.equal(releaseBuffer(record.subarray(32), { headBytes: 32 }), true);
  assert.equal(record.length, 0);
});

test("a SharedArrayBuffer (the worker pool's arena) and undefined are left alone", () => {
  const arena = new Uint8Array(new SharedArrayBuffer(1 << 16));
  assert.equal(releaseBuffer(arena), false);
  assert.equal(arena.length, 1 << 16);
  assert.equal(releaseBuffer(undefined), false);
});
