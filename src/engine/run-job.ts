/**
 * Runs one scan job: read → hash → (compare → compress, per target), or a destination's unpack
 * (decompress → hash → zero scan). Called inside a worker thread, or in-process by the
 * sequential reference path.
 *
 * Copies: each thread reads into one buffer of its own, reused from span to span (a span of
 * at most SMALL_JOB_BYTES into a new buffer of its length). A diff job's span whose raw DATA
 * is at least half of what it read hands that buffer over (its payloads are views of it; it
 * moves to the caller with the result, transferables()) and the thread takes a new one;
 * otherwise the few raw payloads are sliced out and the buffer stays. Either way a byte is
 * copied at most once, and an incremental sync allocates nothing per span.
 */
import { DIGEST_SIZE, type HashAlgorithm, MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import { ProtocolError } from "../../protocol/codec.ts";
import { decompress } from "../platform/zstd.ts";
import { readLent } from "../storage/read-lent.ts";
import type { LentFile } from "../storage/storage.ts";
import { type BlockHasher, createBlockHasher, digestBlocks, isAllZero } from "./block-hash.ts";
import { diffRuns } from "./block-diff.ts";
import { dataOps, packOne } from "./data-ops.ts";
import { giveAdvice } from "./read-ahead.ts";
import { refineRun, runRefineJob } from "./refine-job.ts";
import { type DiffJob, type DiffTarget, type FanDiffResult, JOB_BYTES, type JobOp, type JobResult, type ScanJob, spanBlocks, type UnpackJob, type UnpackResult } from "./scan-job.ts";

const hashers = new Map<string, Promise<BlockHasher>>();
/** Jobs up to this long read into a buffer of their own (see runJob). */
const SMALL_JOB_BYTES = 64 * 1024;
/** This thread's read buffer while no result holds views of it. */
let scratch: Uint8Array | undefined;

export async function runJob(job: ScanJob): Promise<JobResult> {
  if (job.length <= 0 || (job.length > JOB_BYTES && !((job.kind === "diff" || job.kind === "digest") && job.spans))) throw new RangeError(`job length ${job.length}`);
  if (job.kind === "sub-digests" || job.kind === "patch") {
    const packing = { level: job.zstdLevel, blockSize: job.blockSize, withoutPayload: job.withoutPayload };
    return await runRefineJob(job, (raw, offset) => packOne(raw, offset, packing), (raw, offset) => dataOps(raw, offset, packing));
  }
  if (job.kind === "unpack") return unpack(job, await hasherFor(job));
  giveAdvice(job.file, job.advise);
  switch (job.kind) {
    case "digest": {
      const hasher = await hasherFor(job);
      const bs = job.blockSize;
      const spans = job.spans ?? [{ offset: job.offset, length: job.length }];
      const digests = new Uint8Array(spanBlocks(spans, bs) * DIGEST_SIZE);
      let bytesRead = 0;
      forSpans({ ...job, spans }, (span, first) => {
        const { data, bytesRead: n } = readSpan(job.file, span);
        bytesRead += n;
        digests.set(digestBlocks(hasher, data, bs, span.offset / bs), first * DIGEST_SIZE);
      });
      return { digests, bytesRead };
    }
    case "diff":
      return await diffJob(job);
    default:
      throw new TypeError(`unknown job ${(job as ScanJob).kind}`);
  }
}

/**
 * Reads one span (≤ JOB_BYTES) into this thread's scratch buffer, or a buffer of its own
 * length for a span of at most SMALL_JOB_BYTES (handing a raw DATA over then never costs a
 * new 1 MiB scratch, zeroed then garbage, nor pins one behind a few KiB); bytes past the end
 * of the file read as zeros.
 */
function readSpan(file: LentFile, span: { offset: number; length: number }): { buffer: Uint8Array; data: Uint8Array; bytesRead: number } {
  if (span.length <= 0 || span.length > JOB_BYTES) throw new RangeError(`span length ${span.length}`);
  const buffer = span.length <= SMALL_JOB_BYTES ? new Uint8Array(span.length) : (scratch ??= new Uint8Array(JOB_BYTES));
  const data = buffer.subarray(0, span.length);
  const bytesRead = readLent(file, data, span.offset);
  if (bytesRead < data.length) data.fill(0, bytesRead);
  return { buffer, data, bytesRead };
}

/**
 * Calls `each` for the job's spans in order, after checking each is block-aligned, ascending
 * and inside the job, with the index of its first block in the job's digest lists (which hold
 * the spans' blocks one after the other: spanBlocks).
 */
function forSpans(job: { offset: number; length: number; blockSize: number; spans: readonly { offset: number; length: number }[] }, each: (span: { offset: number; length: number }, first: number) => void): void {
  let at = job.offset;
  let first = 0;
  for (const span of job.spans) {
    if (span.offset < at || span.length <= 0 || span.offset % job.blockSize !== 0 || span.offset + span.length > job.offset + job.length) {
      throw new RangeError(`span [${span.offset}, +${span.length}) out of order or outside the job [${job.offset}, +${job.length})`);
    }
    each(span, first);
    first += Math.ceil(span.length / job.blockSize);
    at = span.offset + span.length;
  }
}

/**
 * A diff job, span by span: each read once, then for each target hashed and compared (the
 * holes between spans are not the job's: the session compares those). A span whose raw DATA
 * (all targets') is at least half of what it read hands its buffer over with the result (the
 * payloads are views of it; this thread takes a new scratch); otherwise its few raw payloads
 * are sliced out and the buffer stays. A byte is copied at most once.
 */
async function diffJob(job: DiffJob): Promise<FanDiffResult> {
  const bs = job.blockSize;
  const spans = job.spans ?? [{ offset: job.offset, length: job.length }];
  const blocks = spanBlocks(spans, bs);
  const hashers = await Promise.all(job.targets.map((t) => hasherFor(t)));
  for (const t of job.targets) if (t.dst.length !== blocks * DIGEST_SIZE) throw new RangeError(`digests of ${t.dst.length} bytes for ${blocks} blocks`);
  const targets: FanDiffResult["targets"] = job.targets.map(() => ({ digests: new Uint8Array(blocks * DIGEST_SIZE), ops: [] }));
  const buffers: Uint8Array[] = [];
  let bytesRead = 0;
  forSpans({ ...job, spans }, (span, first) => {
    const { buffer, data, bytesRead: n } = readSpan(job.file, span);
    bytesRead += n;
    const count = Math.ceil(span.length / bs);
    const spanOps: JobOp[][] = job.targets.map((t, i) => {
      const digests = digestBlocks(hashers[i], data, bs, span.offset / bs);
      targets[i].digests.set(digests, first * DIGEST_SIZE);
      return diffOps(data, digests, { ...span, blockSize: bs }, { ...t, dst: t.dst.subarray(first * DIGEST_SIZE, (first + count) * DIGEST_SIZE) });
    });
    let viewed = 0;
    for (const ops of spanOps) for (const op of ops) if (op.kind === "data" && op.payload?.buffer === buffer.buffer) viewed += op.length;
    if (viewed > 0 && 2 * viewed >= span.length) {
      if (buffer === scratch) scratch = undefined; // handed over with the result
      buffers.push(buffer);
    } else if (viewed > 0) {
      for (const ops of spanOps) for (const op of ops) if (op.kind === "data" && op.payload?.buffer === buffer.buffer) op.payload = op.payload.slice();
    }
    spanOps.forEach((ops, i) => targets[i].ops.push(...ops));
  });
  return buffers.length > 0 ? { bytesRead, targets, buffers } : { bytesRead, targets };
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
  if ("buffers" in result && result.buffers) for (const b of result.buffers) add(b);
  const ops = "ops" in result ? result.ops : "targets" in result ? result.targets.flatMap((t) => t.ops) : [];
  for (const op of ops) if ((op.kind === "data" || op.kind === "patch") && op.payload) add(op.payload);
  if ("data" in result && result.data) add(result.data);
  return [...list];
}

