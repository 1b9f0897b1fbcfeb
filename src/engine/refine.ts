/**
 * Refinement on the main thread (spec §5.8): the two round-trip steps, each one scan job,
 * and how its ops count.
 *
 * - subDigestRange (destination): the sub-digests of a run of blocks, read again (likely
 *   from the page cache) in a worker.
 * - patchOps (source): given the destination's sub-digests, the PATCH or DATA ops of the
 *   pages that differ, read again in a worker. A run holds at most MAX_REFINE_LENGTH bytes,
 *   so a job's result is bounded by it.
 */
import { DIGEST_SIZE, MAX_REFINE_LENGTH, SUB_BLOCK_SIZE } from "../../protocol/constants.ts";
import type { JobOp } from "./scan-job.ts";
import type { SideContext, SideStats } from "./side-context.ts";

export async function subDigestRange(ctx: SideContext, run: { offset: number; length: number }): Promise<Uint8Array> {
  checkRun(run);
  const { store } = ctx;
  const r = await store.lend((file) =>
    ctx.pool.subDigests({ file, offset: run.offset, length: run.length, blockSize: ctx.blockSize, hash: ctx.hash, key: ctx.key })
  );
  ctx.stats.bytesReread += r.bytesRead;
  return r.digests;
}

export async function patchOps(
  ctx: SideContext,
  run: { offset: number; length: number; dst: Uint8Array },
  options: { zstdLevel: number; dryRun: boolean },
): Promise<JobOp[]> {
  checkRun(run);
  if (run.dst.length !== Math.ceil(run.length / SUB_BLOCK_SIZE) * DIGEST_SIZE) {
    throw new RangeError(`Cannot patch [${run.offset}, ${run.offset + run.length}): ${run.dst.length / DIGEST_SIZE} sub-digests`);
  }
  const r = await ctx.store.lend((file) =>
    ctx.pool.patch({
      file,
      offset: run.offset,
      length: run.length,
      blockSize: ctx.blockSize,
      hash: ctx.hash,
      key: ctx.key,
      dst: run.dst,
      zstdLevel: options.zstdLevel,
      withoutPayload: options.dryRun,
    })
  );
  ctx.stats.bytesReread += r.bytesRead;
  return r.ops;
}

function checkRun(run: { offset: number; length: number }): void {
  if (run.length <= 0 || run.length > MAX_REFINE_LENGTH || run.offset % SUB_BLOCK_SIZE !== 0) {
    throw new RangeError(`Cannot refine [${run.offset}, ${run.offset + run.length}): not a run of at most ${MAX_REFINE_LENGTH} bytes`);
  }
}

/** A source's counters for one op it sends (a "refine" op sends no bytes of data). */
export function countOp(s: SideStats, op: JobOp, blockSize: number): void {
  switch (op.kind) {
    case "zero":
      s.bytesZeroed += op.length;
      return;
    case "data":
      s.blocksSent += Math.ceil(op.length / blockSize);
      s.bytesSent += op.length;
      s.dataBytesOnWire += op.payload?.length ?? 0;
      return;
    case "patch":
      s.blocksSent += Math.ceil(op.length / blockSize);
      s.bytesSent += op.dataBytes;
      s.bytesZeroed += op.zeroBytes;
      s.dataBytesOnWire += op.payload?.length ?? 0;
      s.blocksPatched += Math.ceil(op.length / blockSize);
      return;
    case "refine":
      s.blocksRefined += Math.ceil(op.length / blockSize);
      return;
  }
}
