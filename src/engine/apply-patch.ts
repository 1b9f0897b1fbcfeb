/**
 * The destination applies a PATCH (spec §5.8): whole blocks rewritten page by page.
 *
 * 1. The blocks' current bytes: zeros for a block whose digest (as the range opened, and
 *    still, since a block is written at most once per range) is zero; otherwise read from
 *    the store, which still holds the old image there (journal, partial file or in place:
 *    no write has touched these blocks yet).
 * 2. The data pages get the PATCH's bytes, the zero pages zeros.
 * 3. The blocks' final digests, from the whole patched blocks, replace the range's.
 * 4. Only the changed pages reach the disk: non-zero ones written, zero ones punched (left
 *    alone in a block that was all zero). In a dry run nothing is written.
 *
 * A PATCH whose zstd payload is not one frame of exactly its data pages' bytes, or that
 * comes without bytes outside a dry run, is a ProtocolError.
 */
import { isZeroDigest, maskedPageBytes, ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import { decompress, initZstd } from "../platform/zstd.ts";
import { type BlockHasher, digestBlocks, isAllZero } from "./block-hash.ts";
import { hasPage, pageBounds, pageCount } from "./page-mask.ts";
import type { PatchOp } from "./scan-job.ts";
import type { SideContext } from "./side-context.ts";
import { releaseBuffer } from "../util/release-buffer.ts";

export type PatchWrite = Omit<PatchOp, "dataBytes" | "zeroBytes">;

export async function applyPatch(
  ctx: SideContext,
  op: PatchWrite,
  o: { hasher: BlockHasher; dryRun: boolean; digests: Uint8Array; first: number },
): Promise<void> {
  const { blockSize: bs, store, stats } = ctx;
  const blocks = Math.ceil(op.length / bs);
  const at = o.first * DIGEST_SIZE;
  const dataBytes = maskedPageBytes(op.data, op.length);
  if (!op.payload && dataBytes > 0) {
    if (!o.dryRun) throw new ProtocolError("PATCH without payload outside a dry run");
    o.digests.fill(0xff, at, at + blocks * DIGEST_SIZE);
    return;
  }
  if (op.zstd) await initZstd(); // decompression of PATCH runs here, on the session's thread
  const bytes = op.zstd ? unpack(op.payload!, dataBytes, op.offset) : op.payload ?? new Uint8Array(0);
  if (bytes.length !== dataBytes) throw new ProtocolError(`PATCH at ${op.offset}: ${bytes.length} bytes for ${dataBytes} bytes of data pages`);
  const wasZero = (block: number) => isZeroDigest(o.digests, o.first + block);
  const buf = new Uint8Array(op.length);
  for (let b = 0; b < blocks; b++) {
    if (wasZero(b)) continue;
    const from = b * bs;
    stats.bytesReread += await store.read(buf.subarray(from, Math.min(op.length, from + bs)), op.offset + from);
  }
  const pages = pageCount(op.length);
  let taken = 0;
  for (let p = 0; p < pages; p++) {
    const [a, z] = pageBounds(p, op.length);
    if (hasPage(op.data, p)) {
      buf.set(bytes.subarray(taken, taken + z - a), a);
      taken += z - a;
    } else if (hasPage(op.zeros, p)) {
      buf.fill(0, a, z);
    }
  }
  o.digests.set(digestBlocks(o.hasher, buf, bs, op.offset / bs), at);
  // The patched blocks and the decompressed pages are this call's own: freed once it is done.
  const release = () => {
    releaseBuffer(buf);
    if (op.zstd) releaseBuffer(bytes);
  };
  if (o.dryRun) return release();
  const action = (p: number): "keep" | "write" | "punch" | "skip" => {
    if (!hasPage(op.data, p) && !hasPage(op.zeros, p)) return "keep";
    const [a, z] = pageBounds(p, op.length);
    if (!isAllZero(buf.subarray(a, z))) return "write";
    return wasZero(Math.floor(a / bs)) ? "skip" : "punch";
  };
  let p = 0;
  while (p < pages) {
    const kind = action(p);
    let q = p + 1;
    while (q < pages && action(q) === kind) q++;
    const from = pageBounds(p, op.length)[0];
    const to = pageBounds(q - 1, op.length)[1];
    if (kind === "write") {
      await store.write(buf.subarray(from, to), op.offset + from);
      stats.bytesWritten += to - from;
    } else if (kind === "punch") {
      stats.holeMethod = await store.punchHole(op.offset + from, to - from);
      stats.bytesPunched += to - from;
    }
    p = q;
  }
  release();
}

function unpack(payload: Uint8Array, length: number, offset: number): Uint8Array {
  try {
    return decompress(payload, length);
  } catch (e) {
    throw new ProtocolError(`PATCH at ${offset}: ${(e as Error).message}`);
  }
}
