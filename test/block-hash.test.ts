/**
 * The default block hash, poly1305 (src/engine/block-hash.ts, spec §4): the ChaCha20-Poly1305
 * tag of an empty message whose additional data is the block, the block's index as nonce.
 * Checked against an independent Poly1305 (tweetnacl's crypto_onetimeauth, keyed with the
 * first 32 bytes of the ChaCha20 keystream at counter 0, as RFC 8439 §2.6 derives it) and
 * pinned to known answers; every block index gets its own digest; parallel (the worker pool)
 * and sequential (in-process) paths agree.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createCipheriv } from "node:crypto";
import nacl from "tweetnacl";
import { createBlockHasher, digestBlocks } from "../src/engine/block-hash.ts";
import { runJob } from "../src/engine/run-job.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { openSource } from "../src/storage/open-source.ts";
import { makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import path from "node:path";

const KEY = new Uint8Array(32).map((_, i) => i);

/** RFC 8439 §2.8: Poly1305 over AAD ‖ pad16 ‖ (no ciphertext) ‖ le64(|AAD|) ‖ le64(0), one-time key from ChaCha20 block 0. */
function independentTag(block: Uint8Array, index: number): Uint8Array {
  const iv = Buffer.alloc(16); // ChaCha20 in node:crypto: 4-byte LE counter ‖ 12-byte nonce
  iv.writeBigUInt64LE(BigInt(index), 4);
  const otk = createCipheriv("chacha20", KEY, iv).update(Buffer.alloc(32));
  const pad = (16 - (block.length % 16)) % 16;
  const m = Buffer.concat([block, Buffer.alloc(pad), Buffer.alloc(16)]);
  m.writeBigUInt64LE(BigInt(block.length), block.length + pad);
  const out = new Uint8Array(16);
  // deno-lint-ignore no-explicit-any
  (nacl as any).lowlevel.crypto_onetimeauth(out, 0, m, 0, m.length, otk);
  return out;
}

test("poly1305 digests are the RFC 8439 tag of the block as additional data, nonce = block index", { timeout: 20_000 }, async () => {
  const hasher = await createBlockHasher("poly1305", KEY);
  for (const length of [1, 15, 16, 17, 4096, 65536, 65537 - 1]) {
    const block = new Uint8Array(length).map((_, i) => (i * 7 + length) & 0xff || 1);
    for (const index of [0, 1, 2 ** 32 + 5, 2 ** 52]) {
      const out = new Uint8Array(16);
      hasher(block, out, 0, index);
      assert.deepEqual(out, independentTag(block, index), `length ${length}, block ${index}`);
    }
  }
});

test("poly1305 known answers; each block index its own digest; zero blocks the zero digest", { timeout: 20_000 }, async () => {
  const hasher = await createBlockHasher("poly1305", KEY);
  const block = new Uint8Array(65536).fill(0xab);
  const hex = (index: number) => {
    const out = new Uint8Array(16);
    hasher(block, out, 0, index);
    return Buffer.from(out).toString("hex");
  };
  assert.equal(hex(0), Buffer.from(independentTag(block, 0)).toString("hex"));
  assert.equal(hex(0), KNOWN_0);
  assert.equal(hex(1), KNOWN_1);
  assert.notEqual(hex(0), hex(1));
  const zero = new Uint8Array(16).fill(9);
  hasher(new Uint8Array(65536), zero, 0, 3);
  assert.deepEqual(zero, new Uint8Array(16));
});

test("the worker pool and the in-process path give the same poly1305 digests at every offset", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, "f.img");
    makeSparseFile(file, { size: 4 << 20, chunks: [{ offset: 0, length: 4 << 20, fill: "random" }] });
    await using store = await openSource(file);
    await using pool = new WorkerPool();
    const hasher = await createBlockHasher("poly1305", KEY);
    const bytes = new Uint8Array(1 << 20);
    for (const offset of [0, 1 << 20, 3 << 20]) {
      await store.read(bytes, offset);
      const job = { offset, length: 1 << 20, blockSize: 65536, hash: "poly1305" as const, key: KEY };
      const parallel = await store.lend((lent) => pool.digest({ file: lent, ...job }));
      const inProcess = await store.lend((lent) => runJob({ kind: "digest", file: lent, ...job }));
      assert.deepEqual(parallel.digests, digestBlocks(hasher, bytes, 65536, offset / 65536));
      assert.deepEqual(inProcess.digests, parallel.digests);
    }
  });
});

const KNOWN_0 = "74a60cdfefa93a84151e8fe7678bc0d5";
const KNOWN_1 = "46bd9f92eb7705b6bfa33afdc4f384f0";
