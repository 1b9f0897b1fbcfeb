/**
 * The source's half of a range: compare the destination's digests with its own and emit
 * DATA and ZERO ops for the blocks that differ.
 *
 * 1. Fetch the source's data extents in the range; the gaps are holes, known without reading.
 * 2. Start diff jobs (read → hash → compare → compress, in workers) for groups of data spans
 *    (groupSpans; the holes between a job's spans are compared here), at most `lookahead` ahead of the consumer (ordered-jobs.ts, the scheduler both roles use); each first reserves (`reserve`) the bytes
 *    its result may hold until every op of it is emitted, in job order, so the job being
 *    consumed always holds its reservation and the reservations cannot deadlock.
 * 3. In offset order, emit the ops of each piece: ZERO where a source hole faces destination
 *    data, and whatever each job found. emit() may wait: that is the back-pressure.
 * 4. Return the source's digests for the whole range (for the root hash).
 *
 * Memory: a job's read buffers (FanDiffResult.buffers, whose views its raw payloads are) and each
 * payload that owns its whole buffer are released (util/release-buffer.ts) once every op of
 * the job said its payload is free (emit resolved to { free }, and every `free` fulfilled):
 * not left for the GC. An op whose emit resolves to nothing keeps the job's buffer to the GC.
 */
import { DIGEST_SIZE, MAX_DATA_LENGTH } from "../../protocol/constants.ts";
import { holeZeroRuns } from "./block-diff.ts";
import { runInOrder } from "./ordered-jobs.ts";
import { dataSpans, groupSpans, type SpanGroup } from "./ranges.ts";
import { countOp } from "./refine.ts";
import { type FanDiffResult, JOB_BYTES, JOB_GROUP_BYTES, type JobOp, spanBlocks, spanDigests } from "./scan-job.ts";
import type { SideContext, SideStats } from "./side-context.ts";
import { releaseBuffer } from "../util/release-buffer.ts";
import type { Extent } from "../storage/storage.ts";

/**
 * What emit resolves to: `free` fulfils once nothing reads the op's payload any more (it was
 * sealed or copied by the channel: sent, or acknowledged), so its buffer may be released; a
 * rejected `free` or none leaves it to the GC.
 */
export type Emitted = { free: Promise<unknown> } | void;

/** Emitted by an emit that resolves only once its op was sent (RecordChannel.send resolved). */
export const SENT: Emitted = { free: Promise.resolve() };

export interface DiffOptions {
  /** The zstd level for a job, asked as it starts (CompressPolicy.level); 0: raw. */
  zstdLevel: () => number;
  dryRun: boolean;
  /** Refinement negotiated: differing blocks go page by page (PATCH, "refine" ops; spec §5.8). */
  refine?: boolean;
  /** Asked per job when refining: may its blocks held with data at the destination go through REFINE (RefinePolicy)? */
  roundTrips?: () => boolean;
  /** `level`: the zstd level the op's job was started with (zstdLevel(); 0 for ZERO runs of holes). */
  emit: (op: JobOp, level: number) => Promise<Emitted>;
}

/** One destination of a range: its hash key, its digests of the range, its counters, how its ops go. */
export interface DiffTargetOf extends DiffOptions {
  hash: SideContext["hash"];
  key: Uint8Array;
  dst: Uint8Array;
  stats: SideStats;
  /** Its session's abort: once aborted, it gets no more ops (the others go on). */
  signal: AbortSignal;
}

/** What a target ended with: its digests of the source's range (for its root hash), or why it stopped. */
export type TargetOutcome = { digests: Uint8Array } | { error: unknown };

export async function diffRange(
  ctx: SideContext,
  range: { offset: number; length: number; dst: Uint8Array; extents?: readonly Extent[] },
  options: DiffOptions & {
    lookahead: number;
    /** Waits until `bytes` fit in the caller's memory bound; resolves to their release. */
    reserve?: (bytes: number) => Promise<() => void>;
  },
): Promise<Uint8Array> {
  const [outcome] = await diffRangeTo(ctx, range, options, [{ ...options, hash: ctx.hash, key: ctx.key, dst: range.dst, stats: ctx.stats, signal: ctx.signal }]);
  if ("error" in outcome) throw outcome.error;
  return outcome.digests;
}

/**
 * diffRange for several destinations at once (a fan-out): the source's range is read once and
 * each target gets its own ops, emitted to all targets together piece by piece (the slowest
 * target paces the read; memory stays that of one range per target). A target whose emit
 * fails or whose signal aborts is dropped from the rest of the range: its outcome is that
 * error and the others go on. Throws only what stops them all (ctx.signal, a failed read,
 * every target dropped: the first target's error).
 */
export async function diffRangeTo(
  ctx: Pick<SideContext, "pool" | "store" | "blockSize" | "signal" | "readAhead">,
  /** `extents`: the range's data extents, when the caller listed them already (Range.extents). */
  range: { offset: number; length: number; extents?: readonly Extent[] },
  options: {
    lookahead: number;
    reserve?: (bytes: number) => Promise<() => void>;
    /** Told the bytes each job read (once, whatever the number of targets). */
    onRead?: (bytes: number) => void;
  },
  targets: readonly DiffTargetOf[],
): Promise<TargetOutcome[]> {
  const { blockSize: bs, store } = ctx;
  const { offset } = range;
  const end = offset + range.length;
  const blocks = Math.ceil(range.length / bs);
  for (const t of targets) if (t.dst.length !== blocks * DIGEST_SIZE) throw new RangeError(`digests of ${t.dst.length} bytes for ${blocks} blocks`);
  type Target = { t: DiffTargetOf; src: Uint8Array; error?: unknown; dead: boolean };
  const live: Target[] = targets.map((t) => ({ t, src: new Uint8Array(blocks * DIGEST_SIZE), dead: false }));
  const drop = (x: Target, e: unknown) => {
    if (x.dead) return;
    x.dead = true;
    x.error = e;
  };
  const alive = () => {
    for (const x of live) if (!x.dead && x.t.signal.aborted) drop(x, x.t.signal.reason);
    const left = live.filter((x) => !x.dead);
    if (left.length === 0) throw live[0].error;
    return left;
  };
  ctx.readAhead?.advance(offset);
  const localEnd = Math.min(end, store.size);
  const extents = range.extents ?? (localEnd > offset ? await store.dataExtents(offset, localEnd) : []);
  const spans = dataSpans(extents, { start: offset, end }, { blockSize: bs, maxBytes: JOB_BYTES });

  /**
   * A data piece is one job: consecutive spans holding ≤ JOB_GROUP_BYTES of data (`dataBytes`:
   * what the job reads), with the holes between them (compared here, as hole pieces are). A hole
   * piece is a hole before, between or after the data pieces. `release`: the piece's
   * reservation, given back once (when consumed, or when its job settles after the range ended).
   */
  /** `levels`: each target's zstd level for the job, asked as it started. */
  type Job = { result: FanDiffResult; targets: Target[]; levels: number[] };
  type Piece = SpanGroup & { data: boolean; job?: Promise<Job>; release?: () => void };
  const pieces: Piece[] = [];
  let at = offset;
  // With reservations (a server's session memory), a job stays within JOB_BYTES of data, so
  // that its reservation, (1 + targets) × its data, fits beside the digests its own READ_DIFF
  // task holds (session-rules.test.ts checks the sizes). A 4 MiB job reserved 8 MiB, a batch
  // slot's whole window, which admits that only when empty, and its own task held 12 KiB of
  // it: the stream waited forever (batch.test.ts, "big files and refinement", under Deno).
  for (const g of groupSpans(spans, options.reserve ? JOB_BYTES : JOB_GROUP_BYTES)) {
    if (g.offset > at) pieces.push({ offset: at, length: g.offset - at, data: false, spans: [], dataBytes: 0 });
    pieces.push({ ...g, data: true });
    at = g.offset + g.length;
  }
  if (at < end) pieces.push({ offset: at, length: end - at, data: false, spans: [], dataBytes: 0 });

  /** The digests of `p`'s blocks in a range-wide list (a view, not a copy). */
  const digestsOf = (dst: Uint8Array, p: { offset: number; length: number }) => {
    const first = (p.offset - offset) / bs;
    return dst.subarray(first * DIGEST_SIZE, (first + Math.ceil(p.length / bs)) * DIGEST_SIZE);
  };
  /** A job's digest list of its spans' blocks, one span after the other (scan-job.ts). */
  const ofSpans = (dst: Uint8Array, p: Piece) => {
    const out = new Uint8Array(spanBlocks(p.spans, bs) * DIGEST_SIZE);
    for (const s of spanDigests(out, p.spans, bs)) s.digests.set(digestsOf(dst, s.span));
    return out;
  };
  /** ZERO runs where a hole of [from, to) faces the target's data. */
  const holeOps = (x: Target, from: number, to: number) =>
    to > from ? holeZeroRuns(digestsOf(x.t.dst, { offset: from, length: to - from }), { offset: from, end: to, blockSize: bs, maxDataBlocks: MAX_DATA_LENGTH / bs }) : [];
  let ended = false;
  const start = (p: Piece): Promise<Job> | undefined => {
    if (!p.data) return undefined;
    const run = async (): Promise<Job> => {
      if (options.reserve) {
        // A job's result and the records it becomes: each at most the piece's length per target.
        p.release = once(await options.reserve((1 + live.length) * p.dataBytes));
        if (ended) {
          p.release();
          throw new Error("Cannot diff: the range ended");
        }
      }
      // The targets still alive as the job starts: a dropped one costs no hashing.
      const jobTargets = alive();
      const levels = jobTargets.map(({ t }) => t.zstdLevel());
      const result = await store.lend((file) => ctx.pool.diff({
        file,
        offset: p.offset,
        length: p.length,
        ...(p.spans.length > 1 ? { spans: p.spans } : {}),
        blockSize: bs,
        advise: ctx.pool.onWorker(p.dataBytes) ? ctx.readAhead?.take() : undefined,
        targets: jobTargets.map(({ t }, i) => ({
          hash: t.hash,
          key: t.key,
          dst: ofSpans(t.dst, p),
          zstdLevel: levels[i],
          withoutPayload: t.dryRun,
          refine: t.refine === true,
          roundTrips: t.refine === true && (t.roundTrips?.() ?? true),
        })),
      }));
      return { result, targets: jobTargets, levels };
    };
    p.job = run();
    return p.job;
  };
  /**
   * Emits `ops` to one target in order; a failure drops that target. Pushes each payload's
   * "free" (true once nothing reads it) to `frees`. A payload viewing one of the job's read
   * buffers (`shared`, which other targets' payloads may view too) is not released alone: the
   * buffers go once every payload of the job is free.
   */
  const emitTo = async (x: Target, ops: readonly JobOp[], level: number, frees: Promise<boolean>[], shared?: ReadonlySet<ArrayBufferLike>) => {
    for (const op of ops) {
      if (x.dead || x.t.signal.aborted) return drop(x, x.t.signal.reason);
      let emitted: Emitted;
      try {
        emitted = await emitCounted(x.t, op, level, bs);
      } catch (e) {
        return drop(x, e);
      }
      const payload = op.kind === "data" || op.kind === "patch" ? op.payload : undefined;
      if (payload === undefined) continue;
      frees.push(emitted === undefined ? Promise.resolve(false) : emitted.free.then(() => {
        if (!shared?.has(payload.buffer)) releaseBuffer(payload); // only a payload that is a whole buffer of its own
        return true;
      }, () => false));
    }
  };
  const consume = async (p: Piece, job: Job | undefined) => {
    if (!job) {
      await Promise.all(alive().map(async (x) => {
        x.t.stats.holeBytesSkipped += p.length;
        await emitTo(x, holeOps(x, p.offset, p.offset + p.length), 0, []);
      }));
      return;
    }
    const { result } = job;
    options.onRead?.(result.bytesRead);
    // One per op with a payload: true once nothing reads it (never rejects: observed at once).
    const frees: Promise<boolean>[] = [];
    const shared = new Set<ArrayBufferLike>((result.buffers ?? []).map((b) => b.buffer));
    await Promise.all(job.targets.map(async (x, i) => {
      if (x.dead) return;
      x.t.stats.bytesRead += result.bytesRead;
      x.t.stats.holeBytesSkipped += p.length - p.dataBytes;
      const { digests, ops } = result.targets[i];
      for (const s of spanDigests(digests, p.spans, bs)) x.src.set(s.digests, (s.span.offset - offset) / bs * DIGEST_SIZE);
      await emitTo(x, withHoles(ops, p.spans, (from, to) => holeOps(x, from, to)), job.levels[i], frees, shared);
    }));
    const buffers = result.buffers;
    if (buffers !== undefined) void Promise.all(frees).then((free) => free.every(Boolean) && buffers.forEach((b) => releaseBuffer(b)));
    p.job = undefined;
    p.release?.();
    alive();
  };
  try {
    await runInOrder(pieces, { lookahead: options.lookahead, signal: ctx.signal, start, consume });
    alive();
    return live.map((x) => x.dead ? { error: x.error } : { digests: x.src });
  } finally {
    ended = true;
    // Jobs started but not consumed give their reservation back once they settle.
    for (const p of pieces) if (p.job) p.job.then(() => p.release?.(), () => p.release?.());
  }
}

/** A job's ops (its spans', ascending) with the ZERO runs of the holes between its spans, in offset order. */
function withHoles(ops: readonly JobOp[], spans: readonly { offset: number; length: number }[], holeOps: (from: number, to: number) => JobOp[]): JobOp[] {
  const out: JobOp[] = [];
  let i = 0;
  for (let k = 0; k < spans.length; k++) {
    const end = spans[k].offset + spans[k].length;
    while (i < ops.length && ops[i].offset < end) out.push(ops[i++]);
    if (k + 1 < spans.length) out.push(...holeOps(end, spans[k + 1].offset));
  }
  while (i < ops.length) out.push(ops[i++]);
  return out;
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    f();
  };
}

function emitCounted(t: DiffTargetOf, op: JobOp, level: number, blockSize: number): Promise<Emitted> {
  countOp(t.stats, op, blockSize);
  return t.emit(op, level);
}
