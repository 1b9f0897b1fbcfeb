/**
 * Comparing source and destination digests of the same blocks.
 *
 * Invariant: a block is sent only when the digests differ; a differing block whose source
 * digest is zero becomes part of a ZERO run, any other differing block part of a DATA run.
 * Runs never mix kinds and DATA runs hold at most maxDataBlocks blocks.
 */
import { DIGEST_SIZE } from "../../protocol/constants.ts";

export interface DiffRun {
  kind: "data" | "zero";
  /** Index of the first block, relative to the digests given. */
  first: number;
  count: number;
}

export function diffRuns(src: Uint8Array, dst: Uint8Array, maxDataBlocks: number): DiffRun[] {
  if (src.length !== dst.length) throw new RangeError("digest lists of different lengths");
  const blocks = src.length / DIGEST_SIZE;
  const runs: DiffRun[] = [];
  let current: DiffRun | undefined;
  for (let i = 0; i < blocks; i++) {
    const kind = blockDiff(src, dst, i);
    if (kind === undefined) {
      current = undefined;
      continue;
    }
    if (current && current.kind === kind && (kind === "zero" || current.count < maxDataBlocks)) {
      current.count++;
    } else {
      current = { kind, first: i, count: 1 };
      runs.push(current);
    }
  }
  return runs;
}

function blockDiff(src: Uint8Array, dst: Uint8Array, i: number): "data" | "zero" | undefined {
  const base = i * DIGEST_SIZE;
  let same = true;
  let srcZero = true;
  for (let k = base; k < base + DIGEST_SIZE; k++) {
    if (src[k] !== dst[k]) same = false;
    if (src[k] !== 0) srcZero = false;
  }
  if (same) return undefined;
  return srcZero ? "zero" : "data";
}

/**
 * ZERO runs for a hole of the source at [offset, end): where the destination's digests `dst`
 * (of the hole's blocks) are not zero. Runs end at `end` (a partial last block of the file).
 */
export function holeZeroRuns(dst: Uint8Array, o: { offset: number; end: number; blockSize: number; maxDataBlocks: number }): { kind: "zero"; offset: number; length: number }[] {
  const out: { kind: "zero"; offset: number; length: number }[] = [];
  for (const run of diffRuns(new Uint8Array(dst.length), dst, o.maxDataBlocks)) {
    const at = o.offset + run.first * o.blockSize;
    out.push({ kind: "zero", offset: at, length: Math.min(o.end, at + run.count * o.blockSize) - at });
  }
  return out;
}
