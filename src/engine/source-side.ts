/**
 * The source's half of a range: compare the destination's digests with its own and emit
 * DATA and ZERO ops for the blocks that differ.
 *
 * 1. Fetch the source's data extents in the range; the gaps are holes, known without reading.
 * 2. Start diff jobs (read → hash → compare → compress, in workers) for the data spans,
 *    at most `lookahead` ahead of the consumer (ordered-jobs.ts, the scheduler both roles use); each first reserves (`reserve`) the bytes
 *    its result may hold until every op of it is emitted, in job order, so the job being
 *    consumed always holds its reservation and the reservations cannot deadlock.
 * 3. In offset order, emit the ops of each piece: ZERO where a source hole faces destination
 *    data, and whatever each job found. emit() may wait: that is the back-pressure.
 * 4. Return the source's digests for the whole range (for the root hash).
 *
 * Memory: a job's read buffer (DiffResult.buffer, whose views its raw payloads are) and each
 * payload that owns its whole buffer are released (util/release-buffer.ts) once every op of
 * the job said its payload is free (emit resolved to { free }, and every `free` fulfilled):
 * not left for the GC. An op whose emit resolves to nothing keeps the job's buffer to the GC.
 */
import { DIGEST_SIZE, MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import { diffRuns } from "./block-diff.ts";
import { runInOrder } from "./ordered-jobs.ts";
import { dataSpans } from "./ranges.ts";
import { countOp } from "./refine.ts";
import { type DiffResult, JOB_BYTES, type JobOp } from "./scan-job.ts";
import type { SideContext } from "./side-context.ts";
import { releaseBuffer } from "../util/release-buffer.ts";

/**
 * What emit resolves to: `free` fulfils once nothing reads the op's payload any more (it was
 * sealed or copied by the channel: sent, or acknowledged), so its buffer may be released; a
 * rejected `free` or none leaves it to the GC.
 */
export type Emitted = { free: Promise<unknown> } | void;

/** Emitted by an emit that resolves only once its op was sent (RecordChannel.send resolved). */
export const SENT: Emitted = { free: Promise.resolve() };

export async function diffRange(
  ctx: SideContext,
  range: { offset: number; length: number; dst: Uint8Array },
  options: {
    /** The zstd level for a job, asked as it starts (CompressPolicy.level); 0: raw. */
    zstdLevel: () => number;
    dryRun: boolean;
    /** Refinement negotiated: differing blocks go page by page (PATCH, "refine" ops; spec §5.8). */
    refine?: boolean;
    /** Asked per job when refining: may its blocks held with data at the destination go through REFINE (RefinePolicy)? */
    roundTrips?: () => boolean;
    lookahead: number;
    emit: (op: JobOp) => Promise<Emitted>;
    /** Waits until `bytes` fit in the caller's memory bound; resolves to their release. */
    reserve?: (bytes: number) => Promise<() => void>;
  },
): Promise<Uint8Array> {
  const { blockSize: bs, store, stats } = ctx;
  const { offset } = range;
  const end = offset + range.length;
  const src = new Uint8Array(range.dst.length);
  ctx.readAhead?.advance(offset);
  const localEnd = Math.min(end, store.size);
  const extents = localEnd > offset ? await store.dataExtents(offset, localEnd) : [];
  const spans = dataSpans(extents, { start: offset, end }, { blockSize: bs, maxBytes: JOB_BYTES });

  /** `release`: the piece's reservation, given back once (when consumed, or when its job settles after the range ended). */
  type Piece = { offset: number; length: number; data: boolean; job?: Promise<DiffResult>; release?: () => void };
  const pieces: Piece[] = [];
  let at = offset;
  for (const s of spans) {
    if (s.offset > at) pieces.push({ offset: at, length: s.offset - at, data: false });
    pieces.push({ offset: s.offset, length: s.length, data: true });
    at = s.offset + s.length;
  }
  if (at < end) pieces.push({ offset: at, length: end - at, data: false });

  const slice = (p: Piece) => {
    const first = (p.offset - offset) / bs;
    return range.dst.slice(first * DIGEST_SIZE, (first + Math.ceil(p.length / bs)) * DIGEST_SIZE);
  };
  let ended = false;
  const start = (p: Piece): Promise<DiffResult> | undefined => {
    if (!p.data) return undefined;
    const run = async (): Promise<DiffResult> => {
      if (options.reserve) {
        // A job's result and the record it becomes: each at most the piece's length.
        p.release = once(await options.reserve(2 * p.length));
        if (ended) {
          p.release();
          throw new Error("Cannot diff: the range ended");
        }
      }
      return await store.lend((file) => ctx.pool.diff({
        file,
        offset: p.offset,
        length: p.length,
        blockSize: bs,
        hash: ctx.hash,
        key: ctx.key,
        dst: slice(p),
        advise: ctx.readAhead?.take(),
        zstdLevel: options.zstdLevel(),
        withoutPayload: options.dryRun,
        refine: options.refine === true,
        roundTrips: options.refine === true && (options.roundTrips?.() ?? true),
      }));
    };
    p.job = run();
    return p.job;
  };
  const consume = async (p: Piece, result: DiffResult | undefined) => {
    const first = (p.offset - offset) / bs;
    if (!result) {
      stats.holeBytesSkipped += p.length;
      const dst = slice(p);
      for (const run of diffRuns(new Uint8Array(dst.length), dst, MAX_DATA_LENGTH / bs)) {
        const o = p.offset + run.first * bs;
        await emitCounted(ctx, options.emit, { kind: "zero", offset: o, length: Math.min(end, o + run.count * bs) - o });
      }
      return;
    }
    stats.bytesRead += result.bytesRead;
    src.set(result.digests, first * DIGEST_SIZE);
    // One per op with a payload: true once nothing reads it (never rejects: observed at once).
    const frees: Promise<boolean>[] = [];
    for (const op of result.ops) {
      const emitted = await emitCounted(ctx, options.emit, op);
      const payload = op.kind === "data" || op.kind === "patch" ? op.payload : undefined;
      if (payload === undefined) continue;
      frees.push(emitted === undefined ? Promise.resolve(false) : emitted.free.then(() => {
        releaseBuffer(payload); // only a payload that is a whole buffer of its own
        return true;
      }, () => false));
    }
    const buffer = result.buffer;
    if (buffer !== undefined) void Promise.all(frees).then((free) => free.every(Boolean) && releaseBuffer(buffer));
    p.job = undefined;
    p.release?.();
  };
  try {
    await runInOrder(pieces, { lookahead: options.lookahead, signal: ctx.signal, start, consume });
    return src;
  } finally {
    ended = true;
    // Jobs started but not consumed give their reservation back once they settle.
    for (const p of pieces) if (p.job) p.job.then(() => p.release?.(), () => p.release?.());
  }
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    f();
  };
}

function emitCounted(ctx: SideContext, emit: (op: JobOp) => Promise<Emitted>, op: JobOp): Promise<Emitted> {
  countOp(ctx.stats, op, ctx.blockSize);
  return emit(op);
}
