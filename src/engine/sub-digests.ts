/**
 * Sub-digests: one DIGEST_SIZE digest per SUB_BLOCK_SIZE page, for refining a differing
 * block (spec §4). A page is hashed like a block of its own, with a domain of its own:
 * poly1305 uses the nonce le64(page index) ‖ 00 00 00 01 (block digests end in 00 00 00 00),
 * so no one-time key serves both a block and a page; the other algorithms hash the page's
 * bytes as they hash a block's (they take no index).
 *
 * Invariants (those of block-hash.ts): an all-zero page has the zero digest (exact byte
 * comparison); a non-zero page never does.
 */
import { Buffer } from "node:buffer";
import { createCipheriv } from "node:crypto";
import { DIGEST_SIZE, type HashAlgorithm, SUB_BLOCK_SIZE } from "../../protocol/constants.ts";
import { type BlockHasher, createBlockHasher, digestBlocks, isAllZero } from "./block-hash.ts";

/** The last nonce byte of a sub-digest (block digests have 0 there). */
const SUB_DOMAIN = 1;

export async function createSubBlockHasher(alg: HashAlgorithm, key: Uint8Array): Promise<BlockHasher> {
  if (alg !== "poly1305") return await createBlockHasher(alg, key);
  const nonce = Buffer.alloc(12);
  nonce[11] = SUB_DOMAIN;
  return (page, out, at, index) => {
    if (isAllZero(page)) {
      out.fill(0, at, at + DIGEST_SIZE);
      return;
    }
    nonce.writeBigUInt64LE(BigInt(index), 0);
    const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: DIGEST_SIZE });
    c.setAAD(page, { plaintextLength: 0 });
    c.final();
    out.set(c.getAuthTag(), at);
    let zero = true;
    for (let k = 0; k < DIGEST_SIZE; k++) if (out[at + k] !== 0) zero = false;
    if (zero) out[at + DIGEST_SIZE - 1] = 1;
  };
}

/** Sub-digests of `data`, the bytes at file offset `offset` (a multiple of SUB_BLOCK_SIZE). */
export function subDigests(hasher: BlockHasher, data: Uint8Array, offset: number): Uint8Array {
  return digestBlocks(hasher, data, SUB_BLOCK_SIZE, offset / SUB_BLOCK_SIZE);
}
