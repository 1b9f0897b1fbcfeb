/**
 * Runs one scan job: read → hash → (compare → compress). Called inside a worker thread,
 * or in-process by the sequential reference path.
 */
import { MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import { compress } from "../platform/zstd.ts";
import { readLent } from "../storage/read-lent.ts";
import { type BlockHasher, createBlockHasher, digestBlocks } from "./block-hash.ts";
import { diffRuns } from "./block-diff.ts";
import { refineRun, runRefineJob } from "./refine-job.ts";
import { type DiffResult, type DigestResult, JOB_BYTES, type JobOp, type ScanJob } from "./scan-job.ts";

/** Compressed DATA is sent only when it saves at least 1/8 of the bytes. */
const WORTH_IT = 7 / 8;
/**
 * Adaptive compression, per thread: after an attempt that did not pay, the next `skip` DATA
 * runs go raw without trying; each further miss doubles that (up to MAX_SKIP), a hit resets
 * it. Incompressible data then costs little CPU; compressible data is still found quickly.
 */
const MAX_SKIP = 64;
const zstdState = { skip: 0, backoff: 1 };
const hashers = new Map<string, Promise<BlockHasher>>();

export async function runJob(job: ScanJob): Promise<DigestResult | DiffResult> {
  if (job.length <= 0 || job.length > JOB_BYTES) throw new RangeError(`job length ${job.length}`);
  if (job.kind === "sub-digests" || job.kind === "patch") return await runRefineJob(job, (raw, offset) => dataOp(raw, offset, job));
  const hasher = await hasherFor(job);
  const data = new Uint8Array(job.length);
  const bytesRead = readLent(job.file, data, job.offset);
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
        if (job.refine) ops.push(...refineRun(raw, { offset, blockSize: job.blockSize, dst: job.dst, first: run.first, pack: (r, at) => dataOp(r, at, job) }));
        else ops.push(dataOp(raw, offset, job));
      }
      return { digests, bytesRead, ops };
    }
    default:
      throw new TypeError(`unknown job ${(job as ScanJob).kind}`);
  }
}

function dataOp(raw: Uint8Array, offset: number, job: { zstdLevel: number; withoutPayload: boolean }): JobOp & { kind: "data" } {
  if (job.withoutPayload) return { kind: "data", offset, length: raw.length, payload: undefined, zstd: false };
  if (job.zstdLevel > 0 && zstdState.skip > 0) {
    zstdState.skip--;
  } else if (job.zstdLevel > 0) {
    const packed = compress(raw, job.zstdLevel);
    if (packed.length <= raw.length * WORTH_IT) {
      zstdState.backoff = 1;
      return { kind: "data", offset, length: raw.length, payload: packed, zstd: true };
    }
    zstdState.skip = zstdState.backoff;
    zstdState.backoff = Math.min(MAX_SKIP, zstdState.backoff * 2);
  }
  return { kind: "data", offset, length: raw.length, payload: raw.slice(), zstd: false };
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
export function transferables(result: DigestResult | DiffResult): ArrayBuffer[] {
  // Only buffers a view owns whole: native zstd output may live in a shared pool.
  const list = new Set<ArrayBuffer>();
  const add = (v: Uint8Array) => {
    if (v.byteOffset === 0 && v.buffer.byteLength === v.length && v.buffer instanceof ArrayBuffer) list.add(v.buffer);
  };
  add(result.digests);
  if ("ops" in result) for (const op of result.ops) if ((op.kind === "data" || op.kind === "patch") && op.payload) add(op.payload);
  return [...list];
}

