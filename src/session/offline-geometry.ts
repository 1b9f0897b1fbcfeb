/**
 * The fixed partition of the offline files (spec §9.1): range k holds blocks
 * [k·OFFLINE_RANGE_BLOCKS, (k+1)·OFFLINE_RANGE_BLOCKS) of a file, cut at its last block, and
 * both roots are taken over these ranges. A signature holds the destination's digests in its
 * old geometry (its size); the update is made and applied in the new one (the source's size).
 *
 * Invariant (`targetDigests`): a block whose bytes differ between the two geometries — the
 * old last block when it is partial, the new last block when it is partial, when the sizes
 * differ — and whose old digest is not zero gets UNKNOWN_DIGEST: the source then always
 * sends it (DATA or ZERO), and a destination that was not sent it fails its root after.
 * Every other block's digest is the same in both geometries (past the old end: zeros).
 */
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import { isZeroDigest } from "../../protocol/codec.ts";
import { blockCount, OFFLINE_RANGE_BLOCKS } from "../../protocol/offline-format.ts";

/** Never a real digest of data the holder of the key did not craft (probability 2^-128). */
export const UNKNOWN_DIGEST = new Uint8Array(DIGEST_SIZE).fill(0xff);

/** Blocks of range `k` in a file of `size` bytes (0 past its end). */
export function rangeBlocks(k: number, size: number, blockSize: number): number {
  return Math.max(0, Math.min(OFFLINE_RANGE_BLOCKS, blockCount(size, blockSize) - k * OFFLINE_RANGE_BLOCKS));
}

/** The byte range of range `k` in a file of `size` bytes ([offset, offset) past its end). */
export function rangeBytes(k: number, size: number, blockSize: number): { offset: number; length: number } {
  const offset = k * OFFLINE_RANGE_BLOCKS * blockSize;
  return { offset, length: Math.max(0, Math.min(size, offset + OFFLINE_RANGE_BLOCKS * blockSize) - offset) };
}

/** Range `k`'s old digests (old geometry, `rangeBlocks(k, sizeBefore)` of them) as the new geometry sees them. */
export function targetDigests(old: Uint8Array, o: { k: number; sizeBefore: number; sizeAfter: number; blockSize: number }): Uint8Array {
  const bs = o.blockSize;
  const first = o.k * OFFLINE_RANGE_BLOCKS;
  const before = rangeBlocks(o.k, o.sizeBefore, bs);
  const after = rangeBlocks(o.k, o.sizeAfter, bs);
  const out = new Uint8Array(after * DIGEST_SIZE);
  out.set(old.subarray(0, Math.min(before, after) * DIGEST_SIZE));
  if (o.sizeBefore === o.sizeAfter) return out;
  const common = Math.min(blockCount(o.sizeBefore, bs), blockCount(o.sizeAfter, bs));
  for (const [size, n] of [[o.sizeBefore, blockCount(o.sizeBefore, bs)], [o.sizeAfter, blockCount(o.sizeAfter, bs)]]) {
    if (size % bs === 0) continue;
    const b = n - 1;
    const i = b - first;
    if (b < common && i >= 0 && i < Math.min(before, after) && !isZeroDigest(out, i)) out.set(UNKNOWN_DIGEST, i * DIGEST_SIZE);
  }
  return out;
}
