/**
 * Block digests: DIGEST_SIZE bytes per block, keyed with the session's fresh random key
 * (except xxh128, for trusted data only). poly1305 (the default) is a keyed universal hash:
 * the ChaCha20-Poly1305 tag of an empty message whose additional data is the block, under
 * the session key, with the block's index as nonce (spec §4) — node:crypto's AEAD, no new
 * crypto; a fresh one-time Poly1305 key per block index.
 *
 * Invariants:
 * - An all-zero block has the zero digest (DIGEST_SIZE zero bytes), whatever the algorithm;
 *   zero detection is an exact byte comparison, never a hash comparison.
 * - A non-zero block never has the zero digest: a computed digest that happens to be all
 *   zero gets its last byte set to 1.
 */
import { createCipheriv, createHmac } from "node:crypto";
import { Buffer } from "node:buffer";
import { createBLAKE3, createXXHash128 } from "hash-wasm";
import { DIGEST_SIZE, type HashAlgorithm, MAX_BLOCK_SIZE } from "../../protocol/constants.ts";

/** Writes the digest of `block`, the file's block number `index`, at `out[at .. at+DIGEST_SIZE)`. */
export type BlockHasher = (block: Uint8Array, out: Uint8Array, at: number, index: number) => void;

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
  return (block, out, at, index) => {
    if (isAllZero(block)) {
      out.fill(0, at, at + DIGEST_SIZE);
      return;
    }
    const d = raw(block, index);
    out.set(d.subarray(0, DIGEST_SIZE), at);
    let zero = true;
    for (let k = 0; k < DIGEST_SIZE; k++) if (out[at + k] !== 0) zero = false;
    if (zero) out[at + DIGEST_SIZE - 1] = 1;
  };
}

async function digestFunction(alg: HashAlgorithm, key: Uint8Array): Promise<(b: Uint8Array, index: number) => Uint8Array> {
  switch (alg) {
    case "poly1305": {
      const nonce = Buffer.alloc(12);
      return (b, index) => {
        nonce.writeBigUInt64LE(BigInt(index), 0); // bytes 8..11 stay zero
        const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: DIGEST_SIZE });
        c.setAAD(b, { plaintextLength: 0 });
        c.final();
        return c.getAuthTag();
      };
    }
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

/** Digests of `data`, the file's blocks from number `firstBlock` on, cut into blocks of `blockSize` (the last may be short). */
export function digestBlocks(hasher: BlockHasher, data: Uint8Array, blockSize: number, firstBlock: number): Uint8Array {
  const blocks = Math.ceil(data.length / blockSize);
  const out = new Uint8Array(blocks * DIGEST_SIZE);
  for (let i = 0; i < blocks; i++) {
    hasher(data.subarray(i * blockSize, Math.min(data.length, (i + 1) * blockSize)), out, i * DIGEST_SIZE, firstBlock + i);
  }
  return out;
}
