/**
 * Runs one scan job: read → hash → (compare → compress), or a destination's unpack
 * (decompress → hash → zero scan). Called inside a worker thread, or in-process by the
 * sequential reference path.
 *
 * Copies: each thread reads into one buffer of its own, reused from job to job (a job of at
 * most SMALL_JOB_BYTES into a new buffer of its length). A diff job
 * whose raw DATA is at least half of what it read hands that buffer over (its payloads are
 * views of it; it moves to the caller with the result, transferables()) and the thread takes
 * a new one; otherwise the few raw payloads are sliced out and the buffer stays. Either way a
 * byte is copied at most once, and an incremental sync allocates nothing per job.
 */
import { MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import { ProtocolError } from "../../protocol/codec.ts";
import { decompress } from "../platform/zstd.ts";
import { readLent } from "../storage/read-lent.ts";
import { type BlockHasher, createBlockHasher, digestBlocks, isAllZero } from "./block-hash.ts";
import { diffRuns } from "./block-diff.ts";
import { dataOps, packOne } from "./data-ops.ts";
import { giveAdvice } from "./read-ahead.ts";
import { refineRun, runRefineJob } from "./refine-job.ts";
import { JOB_BYTES, type JobOp, type JobResult, type ScanJob, type UnpackJob, type UnpackResult } from "./scan-job.ts";

const hashers = new Map<string, Promise<BlockHasher>>();
/** Jobs up to this long read into a buffer of their own (see runJob). */
const SMALL_JOB_BYTES = 64 * 1024;
/** This thread's read buffer while no result holds views of it. */
let scratch: Uint8Array | undefined;

export async function runJob(job: ScanJob): Promise<JobResult> {
  if (job.length <= 0 || job.length > JOB_BYTES) throw new RangeError(`job length ${job.length}`);
  if (job.kind === "sub-digests" || job.kind === "patch") {
    const packing = { level: job.zstdLevel, blockSize: job.blockSize, withoutPayload: job.withoutPayload };
    return await runRefineJob(job, (raw, offset) => packOne(raw, offset, packing), (raw, offset) => dataOps(raw, offset, packing));
  }
  const hasher = await hasherFor(job);
  if (job.kind === "unpack") return unpack(job, hasher);
  giveAdvice(job.file, job.advise);
  // A small job (a small file's) reads into a buffer of its own size: handing a raw DATA over
  // then never costs a new 1 MiB scratch (zeroed, then garbage) nor pins one behind a few KiB.
  const buffer = job.length <= SMALL_JOB_BYTES ? new Uint8Array(job.length) : (scratch ??= new Uint8Array(JOB_BYTES));
  const data = buffer.subarray(0, job.length);
  const bytesRead = readLent(job.file, data, job.offset);
  if (bytesRead < data.length) data.fill(0, bytesRead); // past the end of the file: zeros
  const digests = digestBlocks(hasher, data, job.blockSize, job.offset / job.blockSize);
  switch (job.kind) {
    case "digest":
      return { digests, bytesRead };
    case "diff": {
      const ops: JobOp[] = [];
      for (const run of diffRuns(digests, job.dst, MAX_DATA_LENGTH / job.blockSize)) {
        const start = run.first * job.blockSize;
        const end = Math.min(job.length, (run.first + run.count) * job.blockSize);
        const offset = job.offset + start;
        if (run.kind === "zero") {
          ops.push({ kind: "zero", offset, length: end - start });
          continue;
        }
        const raw = data.subarray(start, end);
        const packing = { level: job.zstdLevel, blockSize: job.blockSize, withoutPayload: job.withoutPayload };
        if (job.refine) {
          ops.push(...refineRun(raw, {
            offset,
            blockSize: job.blockSize,
            dst: job.dst,
            first: run.first,
            roundTrips: job.roundTrips !== false,
            pack: (r, at) => packOne(r, at, packing),
            packRun: (r, at) => dataOps(r, at, packing),
          }));
        } else {
          ops.push(...dataOps(raw, offset, packing));
        }
      }
      let viewed = 0;
      for (const op of ops) if (op.kind === "data" && op.payload?.buffer === buffer.buffer) viewed += op.length;
      if (viewed === 0) return { digests, bytesRead, ops };
      if (2 * viewed >= job.length) {
        if (buffer === scratch) scratch = undefined; // handed over with the result
        return { digests, bytesRead, ops, buffer };
      }
      for (const op of ops) if (op.kind === "data" && op.payload?.buffer === buffer.buffer) op.payload = op.payload.slice();
      return { digests, bytesRead, ops };
    }
    default:
      throw new TypeError(`unknown job ${(job as ScanJob).kind}`);
  }
}

function unpack(job: UnpackJob, hasher: BlockHasher): UnpackResult {
  const payload = job.payload!;
  let data = payload;
  if (job.zstd) {
    try {
      data = decompress(payload, job.length);
    } catch (e) {
      throw new ProtocolError(`DATA at ${job.offset}: ${(e as Error).message}`);
    }
  }
  if (data.length !== job.length) throw new ProtocolError(`DATA at ${job.offset} decompressed to ${data.length} bytes, not ${job.length}`);
  const digests = digestBlocks(hasher, data, job.blockSize, job.offset / job.blockSize);
  const zeroPages = new Uint8Array(Math.ceil(data.length / job.page));
  for (let i = 0; i < zeroPages.length; i++) {
    if (isAllZero(data.subarray(i * job.page, Math.min(data.length, (i + 1) * job.page)))) zeroPages[i] = 1;
  }
  // A raw payload is the caller's own bytes (here maybe a view of the shared arena): not returned.
  return { data: job.zstd ? data : undefined, digests, zeroPages };
}

function hasherFor(job: ScanJob): Promise<BlockHasher> {
  const id = `${job.hash}:${Array.from(job.key).join(",")}`;
  let h = hashers.get(id);
  if (!h) {
    if (hashers.size >= 8) hashers.clear();
    h = createBlockHasher(job.hash, job.key);
    hashers.set(id, h);
  }
  return h;
}

/** Transferable buffers of a result, so that posting it copies nothing. */
export function transferables(result: JobResult): ArrayBuffer[] {
  // Only buffers a view owns whole (native zstd output may live in a shared pool), and the
  // buffer a diff job read into, whose views its raw DATA payloads are.
  const list = new Set<ArrayBuffer>();
  const add = (v: Uint8Array) => {
    if (v.byteOffset === 0 && v.buffer.byteLength === v.length && v.buffer instanceof ArrayBuffer) list.add(v.buffer);
  };
  add(result.digests);
  if ("buffer" in result && result.buffer) add(result.buffer);
  if ("ops" in result) for (const op of result.ops) if ((op.kind === "data" || op.kind === "patch") && op.payload) add(op.payload);
  if ("data" in result && result.data) add(result.data);
  return [...list];
}

