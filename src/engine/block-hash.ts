/**
 * Block digests: DIGEST_SIZE bytes per block, keyed with the session's fresh random key
 * (except xxh128, for trusted data only).
 *
 * Invariants:
 * - An all-zero block has the zero digest (DIGEST_SIZE zero bytes), whatever the algorithm;
 *   zero detection is an exact byte comparison, never a hash comparison.
 * - A non-zero block never has the zero digest: a computed digest that happens to be all
 *   zero gets its last byte set to 1.
 */
import { createHmac } from "node:crypto";
import { Buffer } from "node:buffer";
import { createBLAKE3, createXXHash128 } from "hash-wasm";
import { DIGEST_SIZE, type HashAlgorithm, MAX_BLOCK_SIZE } from "../../protocol/constants.ts";

/** Writes the digest of `block` at `out[at .. at+DIGEST_SIZE)`. */
export type BlockHasher = (block: Uint8Array, out: Uint8Array, at: number) => void;

const ZEROS = Buffer.alloc(MAX_BLOCK_SIZE);

/** True when every byte of `data` is zero (memcmp against a zero buffer). */
export function isAllZero(data: Uint8Array): boolean {
  if (data.length > ZEROS.length) {
    for (let at = 0; at < data.length; at += ZEROS.length) {
      if (!isAllZero(data.subarray(at, Math.min(data.length, at + ZEROS.length)))) return false;
    }
    return true;
  }
  return Buffer.from(data.buffer, data.byteOffset, data.length).equals(ZEROS.subarray(0, data.length));
}

export async function createBlockHasher(alg: HashAlgorithm, key: Uint8Array): Promise<BlockHasher> {
  const raw = await digestFunction(alg, key);
  return (block, out, at) => {
    if (isAllZero(block)) {
      out.fill(0, at, at + DIGEST_SIZE);
      return;
    }
    const d = raw(block);
    out.set(d.subarray(0, DIGEST_SIZE), at);
    let zero = true;
    for (let k = 0; k < DIGEST_SIZE; k++) if (out[at + k] !== 0) zero = false;
    if (zero) out[at + DIGEST_SIZE - 1] = 1;
  };
}

async function digestFunction(alg: HashAlgorithm, key: Uint8Array): Promise<(b: Uint8Array) => Uint8Array> {
  switch (alg) {
    case "hmac-sha256":
      return (b) => createHmac("sha256", key).update(b).digest();
    case "blake3": {
      const h = await createBLAKE3(128, key);
      return (b) => {
        h.init();
        h.update(b);
        return h.digest("binary");
      };
    }
    case "xxh128": {
      const v = new DataView(key.buffer, key.byteOffset, key.byteLength);
      const h = await createXXHash128(v.getUint32(0), v.getUint32(4));
      return (b) => {
        h.init();
        h.update(b);
        return h.digest("binary");
      };
    }
    default:
      throw new TypeError(`unknown hash ${alg satisfies never}`);
  }
}

/** Digests of `data` cut into blocks of `blockSize` (the last may be short). */
export function digestBlocks(hasher: BlockHasher, data: Uint8Array, blockSize: number): Uint8Array {
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(blocks * DIGEST_SIZE);
  for (let i = 0; i < blocks; i++) {
    hasher(data.subarray(i * blockSize, Math.min(data.length, (i + 1) * blockSize)), out, i * DIGEST_SIZE);
  }
  return out;
}
