/**
 * The worker-side steps of refinement (spec §5.8), run inside scan jobs (run-job.ts):
 *
 * 1. refineRun (source, in a diff job): splits a run of differing non-zero source blocks.
 *    Blocks the destination holds as zeros need no round trip: they go as their non-zero
 *    pages (PATCH, or DATA when every page is non-zero). Blocks it holds with data become
 *    a "refine" op: the session asks for their sub-digests.
 * 2. sub-digests job (destination, answering REFINE): reads the blocks and hashes each page.
 * 3. patch job (source, given the destination's sub-digests): reads the blocks again (the
 *    page cache most likely still has them), hashes each page, and sends only the pages
 *    that differ: their bytes, or a zero mark for a page that became zeros.
 *
 * Invariant: every op covers whole blocks of the run it came from, and a PATCH names at
 * least one page; its payload is the data pages' bytes in ascending order (then packed).
 */
import { isZeroDigest } from "../../protocol/codec.ts";
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import { readLent } from "../storage/read-lent.ts";
import type { BlockHasher } from "./block-hash.ts";
import { isAllZero } from "./block-hash.ts";
import { hasPage, newMask, pageBounds, pageCount, setPage } from "./page-mask.ts";
import type { DigestResult, DiffResult, JobOp, PatchJob, PatchOp, SubDigestJob } from "./scan-job.ts";
import { createSubBlockHasher, subDigests } from "./sub-digests.ts";

/** Packs raw bytes as a DATA op (compressed or not, or without payload in a dry run): run-job's policy. */
export type Pack = (raw: Uint8Array, offset: number) => JobOp & { kind: "data" };
/** Packs a run of whole blocks as DATA ops (compression decided per block: data-ops.ts). */
export type PackRun = (raw: Uint8Array, offset: number) => JobOp[];

const hashers = new Map<string, Promise<BlockHasher>>();

function subHasherFor(job: SubDigestJob | PatchJob): Promise<BlockHasher> {
  const id = `${job.hash}:${Array.from(job.key).join(",")}`;
  let h = hashers.get(id);
  if (!h) {
    if (hashers.size >= 8) hashers.clear();
    h = createSubBlockHasher(job.hash, job.key);
    hashers.set(id, h);
  }
  return h;
}

export async function runRefineJob(job: SubDigestJob | PatchJob, pack: Pack, packRun: PackRun): Promise<DigestResult | DiffResult> {
  const hasher = await subHasherFor(job);
  const data = new Uint8Array(job.length);
  const bytesRead = readLent(job.file, data, job.offset);
  const digests = subDigests(hasher, data, job.offset);
  if (job.kind === "sub-digests") return { digests, bytesRead };
  if (job.dst.length !== digests.length) throw new RangeError(`patch job: ${job.dst.length / DIGEST_SIZE} sub-digests for ${digests.length / DIGEST_SIZE} pages`);
  const pages = pageCount(job.length);
  const dataMask = newMask(pages);
  const zeros = newMask(pages);
  let dataPages = 0;
  let zeroPages = 0;
  for (let i = 0; i < pages; i++) {
    if (sameDigest(digests, job.dst, i)) continue;
    if (isZeroDigest(digests, i)) {
      setPage(zeros, i);
      zeroPages++;
    } else {
      setPage(dataMask, i);
      dataPages++;
    }
  }
  const ops: JobOp[] = [];
  if (dataPages === pages) ops.push(...packRun(data, job.offset));
  else if (dataPages + zeroPages > 0) ops.push(patchOp(data, { offset: job.offset, data: dataMask, zeros }, pack));
  return { digests: new Uint8Array(0), bytesRead, ops };
}

/**
 * Ops for a run of differing blocks whose source digests are non-zero: `raw` is the run's
 * bytes at file offset `offset`, `dst` the destination's digests from block `first` on.
 */
export function refineRun(
  raw: Uint8Array,
  o: { offset: number; blockSize: number; dst: Uint8Array; first: number; roundTrips?: boolean; pack: Pack; packRun: PackRun },
): JobOp[] {
  const bs = o.blockSize;
  const blocks = Math.ceil(raw.length / bs);
  const ops: JobOp[] = [];
  let i = 0;
  while (i < blocks) {
    const zeroAtDestination = isZeroDigest(o.dst, o.first + i);
    let j = i + 1;
    while (j < blocks && isZeroDigest(o.dst, o.first + j) === zeroAtDestination) j++;
    const from = i * bs;
    const to = Math.min(raw.length, j * bs);
    if (!zeroAtDestination) {
      // Without round trips (RefinePolicy: they did not pay lately), whole blocks.
      if (o.roundTrips === false) ops.push(...o.packRun(raw.subarray(from, to), o.offset + from));
      else ops.push({ kind: "refine", offset: o.offset + from, length: to - from });
    } else {
      const bytes = raw.subarray(from, to);
      const pages = pageCount(bytes.length);
      const mask = newMask(pages);
      let dataPages = 0;
      for (let p = 0; p < pages; p++) {
        const [a, b] = pageBounds(p, bytes.length);
        if (!isAllZero(bytes.subarray(a, b))) {
          setPage(mask, p);
          dataPages++;
        }
      }
      if (dataPages === pages) ops.push(...o.packRun(bytes, o.offset + from));
      else ops.push(patchOp(bytes, { offset: o.offset + from, data: mask, zeros: newMask(pages) }, o.pack));
    }
    i = j;
  }
  return ops;
}

function patchOp(bytes: Uint8Array, m: { offset: number; data: Uint8Array; zeros: Uint8Array }, pack: Pack): PatchOp {
  const pages = pageCount(bytes.length);
  let dataBytes = 0;
  let zeroBytes = 0;
  for (let p = 0; p < pages; p++) {
    const [a, b] = pageBounds(p, bytes.length);
    if (hasPage(m.data, p)) dataBytes += b - a;
    else if (hasPage(m.zeros, p)) zeroBytes += b - a;
  }
  const raw = new Uint8Array(dataBytes);
  let at = 0;
  for (let p = 0; p < pages; p++) {
    if (!hasPage(m.data, p)) continue;
    const [a, b] = pageBounds(p, bytes.length);
    raw.set(bytes.subarray(a, b), at);
    at += b - a;
  }
  const packed = dataBytes > 0 ? pack(raw, m.offset) : { payload: new Uint8Array(0), zstd: false };
  return {
    kind: "patch",
    offset: m.offset,
    length: bytes.length,
    data: m.data,
    zeros: m.zeros,
    payload: packed.payload,
    zstd: packed.zstd,
    dataBytes,
    zeroBytes,
  };
}

function sameDigest(a: Uint8Array, b: Uint8Array, i: number): boolean {
  const base = i * DIGEST_SIZE;
  for (let k = base; k < base + DIGEST_SIZE; k++) if (a[k] !== b[k]) return false;
  return true;
}
