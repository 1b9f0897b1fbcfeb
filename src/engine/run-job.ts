/**
 * Runs one scan job: read → hash → (compare → compress, per target), or a destination's unpack
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
import { type HashAlgorithm, MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import { ProtocolError } from "../../protocol/codec.ts";
import { decompress } from "../platform/zstd.ts";
import { readLent } from "../storage/read-lent.ts";
import { type BlockHasher, createBlockHasher, digestBlocks, isAllZero } from "./block-hash.ts";
import { diffRuns } from "./block-diff.ts";
import { dataOps, packOne } from "./data-ops.ts";
import { giveAdvice } from "./read-ahead.ts";
import { refineRun, runRefineJob } from "./refine-job.ts";
import { type DiffTarget, type FanDiffResult, JOB_BYTES, type JobOp, type JobResult, type ScanJob, type UnpackJob, type UnpackResult } from "./scan-job.ts";

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
  if (job.kind === "unpack") return unpack(job, await hasherFor(job));
  giveAdvice(job.file, job.advise);
  // A small job (a small file's) reads into a buffer of its own size: handing a raw DATA over
  // then never costs a new 1 MiB scratch (zeroed, then garbage) nor pins one behind a few KiB.
  const buffer = job.length <= SMALL_JOB_BYTES ? new Uint8Array(job.length) : (scratch ??= new Uint8Array(JOB_BYTES));
  const data = buffer.subarray(0, job.length);
  const bytesRead = readLent(job.file, data, job.offset);
  if (bytesRead < data.length) data.fill(0, bytesRead); // past the end of the file: zeros
  switch (job.kind) {
    case "digest":
      return { digests: digestBlocks(await hasherFor(job), data, job.blockSize, job.offset / job.blockSize), bytesRead };
    case "diff": {
      // One read, then each target's own hash and comparison: a fan-out reads the source once.
      const targets: FanDiffResult["targets"] = [];
      for (const t of job.targets) {
        const digests = digestBlocks(await hasherFor(t), data, job.blockSize, job.offset / job.blockSize);
        targets.push({ digests, ops: diffOps(data, digests, job, t) });
      }
      let viewed = 0;
      for (const t of targets) for (const op of t.ops) if (op.kind === "data" && op.payload?.buffer === buffer.buffer) viewed += op.length;
      if (viewed === 0) return { bytesRead, targets };
      if (2 * viewed >= job.length) {
        if (buffer === scratch) scratch = undefined; // handed over with the result
        return { bytesRead, targets, buffer };
      }
      for (const t of targets) for (const op of t.ops) if (op.kind === "data" && op.payload?.buffer === buffer.buffer) op.payload = op.payload.slice();
      return { bytesRead, targets };
    }
    default:
      throw new TypeError(`unknown job ${(job as ScanJob).kind}`);
  }
}

/** A target's ops for the blocks of `data` whose `digests` differ from its own (`t.dst`). */
function diffOps(data: Uint8Array, digests: Uint8Array, job: { offset: number; length: number; blockSize: number }, t: DiffTarget): JobOp[] {
  const ops: JobOp[] = [];
  for (const run of diffRuns(digests, t.dst, MAX_DATA_LENGTH / job.blockSize)) {
    const start = run.first * job.blockSize;
    const end = Math.min(job.length, (run.first + run.count) * job.blockSize);
    const offset = job.offset + start;
    if (run.kind === "zero") {
      ops.push({ kind: "zero", offset, length: end - start });
      continue;
    }
    const raw = data.subarray(start, end);
    const packing = { level: t.zstdLevel, blockSize: job.blockSize, withoutPayload: t.withoutPayload };
    if (t.refine) {
      ops.push(...refineRun(raw, {
        offset,
        blockSize: job.blockSize,
        dst: t.dst,
        first: run.first,
        roundTrips: t.roundTrips !== false,
        pack: (r, at) => packOne(r, at, packing),
        packRun: (r, at) => dataOps(r, at, packing),
      }));
    } else {
      ops.push(...dataOps(raw, offset, packing));
    }
  }
  return ops;
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

function hasherFor(o: { hash: HashAlgorithm; key: Uint8Array }): Promise<BlockHasher> {
  const id = `${o.hash}:${Array.from(o.key).join(",")}`;
  let h = hashers.get(id);
  if (!h) {
    if (hashers.size >= 8) hashers.clear();
    h = createBlockHasher(o.hash, o.key);
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
  if ("digests" in result) add(result.digests);
  if ("targets" in result) for (const t of result.targets) add(t.digests);
  if ("buffer" in result && result.buffer) add(result.buffer);
  const ops = "ops" in result ? result.ops : "targets" in result ? result.targets.flatMap((t) => t.ops) : [];
  for (const op of ops) if ((op.kind === "data" || op.kind === "patch") && op.payload) add(op.payload);
  if ("data" in result && result.data) add(result.data);
  return [...list];
}

