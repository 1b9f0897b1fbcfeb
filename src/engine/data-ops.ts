/**
 * The DATA ops for one run of differing blocks, compressed per block (issue 9).
 *
 * With `level` 0 (or in a dry run) the run is one op, raw, as it was read. Otherwise every
 * unit of COMPRESS_UNIT bytes (or one block, when blocks are larger) is compressed on its own
 * and goes as zstd when that saves at least 1/8 of its bytes; consecutive units that do not
 * pay go together as one raw op. So a compressible unit after random ones is still found: no
 * unit is skipped untried.
 *
 * Invariants:
 * - The ops tile [offset, offset + raw.length) in order, each starting on a unit (hence block)
 *   boundary; a zstd payload is one frame of exactly its op's bytes and is shorter than
 *   WORTH_IT of them; a raw payload is a view of `raw` (runJob copies it out or hands the
 *   read buffer over with the result).
 * - Every op is at most raw.length bytes long (the caller keeps runs ≤ MAX_DATA_LENGTH).
 */
import { compress } from "../platform/zstd.ts";
import { releaseBuffer } from "../util/release-buffer.ts";
import type { JobOp } from "./scan-job.ts";

/** Bytes each compression decision covers (at least one block). */
export const COMPRESS_UNIT = 64 * 1024;
/** Compressed DATA is sent only when it saves at least 1/8 of the bytes. */
export const WORTH_IT = 7 / 8;
/**
 * Each unit's first SAMPLE bytes are tried first: when they do not shrink by 1/32, the unit
 * counts as incompressible (random, already compressed) and goes raw without compressing it
 * whole — random data then costs 1/16 of a compression, not a whole one, which matters when
 * the CPU is shared with the other side or the link is fast.
 */
export const SAMPLE = 4096;
const SAMPLE_WORTH_IT = 31 / 32;

export function dataOps(
  raw: Uint8Array,
  offset: number,
  options: { level: number; blockSize: number; withoutPayload: boolean },
): JobOp[] {
  if (options.withoutPayload) return [{ kind: "data", offset, length: raw.length, payload: undefined, zstd: false }];
  if (options.level <= 0) return [rawOp(raw, offset)];
  const unit = Math.max(COMPRESS_UNIT, options.blockSize);
  const ops: JobOp[] = [];
  /** Start (in `raw`) of the units not worth compressing, not yet emitted. */
  let rawFrom = 0;
  for (let at = 0; at < raw.length; at += unit) {
    const piece = raw.subarray(at, Math.min(raw.length, at + unit));
    if (piece.length > 2 * SAMPLE && !worthIt(piece.subarray(0, SAMPLE), options.level, SAMPLE_WORTH_IT)) continue;
    const packed = compress(piece, options.level);
    if (packed.length > piece.length * WORTH_IT) {
      releaseBuffer(packed); // a frame of its own that nothing else views: not left to the GC
      continue;
    }
    if (rawFrom < at) ops.push(rawOp(raw.subarray(rawFrom, at), offset + rawFrom));
    ops.push({ kind: "data", offset: offset + at, length: piece.length, payload: packed, zstd: true });
    rawFrom = at + piece.length;
  }
  if (rawFrom < raw.length) ops.push(rawOp(raw.subarray(rawFrom), offset + rawFrom));
  return ops;
}

/** One DATA op for all of `raw` (a PATCH's packed pages): compressed when that saves ≥ 1/8. */
export function packOne(
  raw: Uint8Array,
  offset: number,
  options: { level: number; withoutPayload: boolean },
): JobOp & { kind: "data" } {
  if (options.withoutPayload) return { kind: "data", offset, length: raw.length, payload: undefined, zstd: false };
  if (options.level > 0) {
    const packed = compress(raw, options.level);
    if (packed.length <= raw.length * WORTH_IT) return { kind: "data", offset, length: raw.length, payload: packed, zstd: true };
    releaseBuffer(packed);
  }
  return rawOp(raw, offset);
}

/** Whether `sample` compresses to at most `ratio` of its length (the frame is freed at once). */
function worthIt(sample: Uint8Array, level: number, ratio: number): boolean {
  const frame = compress(sample, level);
  const ok = frame.length <= sample.length * ratio;
  releaseBuffer(frame);
  return ok;
}

function rawOp(raw: Uint8Array, offset: number): JobOp & { kind: "data" } {
  return { kind: "data", offset, length: raw.length, payload: raw, zstd: false };
}
