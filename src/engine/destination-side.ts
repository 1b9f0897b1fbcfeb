/**
 * The destination's half: digests of a range, and applying DATA and ZERO to open ranges.
 *
 * Invariants:
 * - A write is accepted only inside an open range (opened when its digests were produced,
 *   closed by RANGE_DONE), and each block of a range at most once; the range's digests
 *   follow every write, so at close they are the final digests of its blocks, which go into
 *   the root hash.
 * - open(), write() and close() check their arguments at once and throw synchronously; the
 *   promise write() or close() returns is the work itself. close() waits for every write
 *   registered before it.
 * - In a dry run nothing is written; writes only update the digests.
 * - A write that breaks these rules, or DATA that does not decompress to its length, is a
 *   ProtocolError: the peer misbehaves.
 * - Decompression, hashing and the zero scan of DATA run in the worker pool (an unpack job);
 *   this thread only checks, orders and issues the writes.
 * - A DATA or PATCH payload is the tail of the record it arrived in (behind its header, and a
 *   PATCH's masks), a buffer the writer owns from write() on: once written, that record and
 *   the decompressed bytes are released at once (util/release-buffer.ts), not left to the GC.
 */
import { DIGEST_SIZE, HEADER_SIZE } from "../../protocol/constants.ts";
import { isZeroDigest, ProtocolError } from "../../protocol/codec.ts";
import { applyPatch, type PatchWrite } from "./apply-patch.ts";
import { type BlockHasher, createBlockHasher } from "./block-hash.ts";
import { runInOrder } from "./ordered-jobs.ts";
import { dataSpans, groupSpans } from "./ranges.ts";
import { RootHash } from "./root-hash.ts";
import { JOB_BYTES, JOB_GROUP_BYTES, spanDigests } from "./scan-job.ts";
import type { SideContext } from "./side-context.ts";
import { releaseBuffer } from "../util/release-buffer.ts";

/** Granularity of holes the destination keeps: the smallest block size. */
const PAGE = 4096;

/** Digests of [offset, offset+length): holes without reading, data spans in workers (ordered-jobs.ts). */
export async function digestRange(
  ctx: SideContext,
  range: { offset: number; length: number },
  options: { lookahead: number; punchZeroBlocks: boolean },
): Promise<Uint8Array> {
  const { blockSize: bs, store, stats } = ctx;
  const end = range.offset + range.length;
  const out = new Uint8Array(Math.ceil(range.length / bs) * DIGEST_SIZE);
  ctx.readAhead?.advance(range.offset);
  const localEnd = Math.min(end, store.size);
  const extents = localEnd > range.offset ? await store.dataExtents(range.offset, localEnd) : [];
  const spans = dataSpans(extents, { start: range.offset, end: localEnd }, { blockSize: bs, maxBytes: JOB_BYTES });
  // One job per group of spans (source-side.ts's JOB_GROUP_BYTES): its digests are its spans'
  // one after the other; the holes between them keep their zero digests in `out`.
  const groups = groupSpans(spans, JOB_GROUP_BYTES);
  let dataBytes = 0;
  await runInOrder(groups, {
    lookahead: options.lookahead,
    signal: ctx.signal,
    start: (g) => store.lend((file) =>
      ctx.pool.digest({
        file,
        offset: g.offset,
        length: g.length,
        ...(g.spans.length > 1 ? { spans: g.spans } : {}),
        blockSize: bs,
        hash: ctx.hash,
        key: ctx.key,
        advise: ctx.pool.onWorker(g.dataBytes) ? ctx.readAhead?.take() : undefined,
      })
    ),
    consume: async (g, r) => {
      stats.bytesRead += r!.bytesRead;
      dataBytes += g.dataBytes;
      for (const { span, digests } of spanDigests(r!.digests, g.spans, bs)) {
        out.set(digests, ((span.offset - range.offset) / bs) * DIGEST_SIZE);
        if (options.punchZeroBlocks) await punchZeroBlocks(ctx, { offset: span.offset, length: span.length, digests });
      }
    },
  });
  ctx.signal.throwIfAborted();
  stats.holeBytesSkipped += range.length - dataBytes;
  return out;
}

/** Allocated all-zero blocks found while reading become holes (zero blocks are holes). */
async function punchZeroBlocks(ctx: SideContext, span: { offset: number; length: number; digests: Uint8Array }): Promise<void> {
  if (!ctx.store.punchesHoles) return; // rewriting zeros would gain nothing
  const bs = ctx.blockSize;
  const blocks = span.digests.length / DIGEST_SIZE;
  let i = 0;
  while (i < blocks) {
    if (!isZeroDigest(span.digests, i)) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < blocks && isZeroDigest(span.digests, j)) j++;
    const from = span.offset + i * bs;
    const to = Math.min(span.offset + span.length, span.offset + j * bs);
    ctx.stats.holeMethod = await ctx.store.punchHole(from, to - from);
    ctx.stats.bytesPunched += to - from;
    i = j;
  }
}

export interface WriterOptions {
  dryRun: boolean;
  maxIntervals?: number;
  /** Told each range's final digests (those added to the root) once its writes are applied. */
  onClosed?: (firstBlock: number, digests: Uint8Array) => void;
}

export type WriteOp =
  | { kind: "data"; offset: number; length: number; payload: Uint8Array | undefined; zstd: boolean }
  | { kind: "zero"; offset: number; length: number }
  | PatchWrite;

interface OpenRange {
  offset: number;
  end: number;
  digests: Uint8Array;
  /** One bit per block: written already (a block is written at most once per range). */
  written: Uint8Array;
  /** One bit per block: its sub-digests were asked for (REFINE, at most once per range, before any write to it). */
  refined: Uint8Array;
  /** Every write registered, ≤ one per block. */
  writes: Promise<void>[];
}

export class DestinationWriter {
  #ctx: SideContext;
  #dryRun: boolean;
  #onClosed: WriterOptions["onClosed"];
  #open = new Map<number, OpenRange>();
  /** PATCH digests are computed here, from the whole patched blocks (apply-patch.ts). */
  #patchHasher: Promise<BlockHasher> | undefined;
  readonly root: RootHash;

  private constructor(ctx: SideContext, options: WriterOptions) {
    this.#ctx = ctx;
    this.#dryRun = options.dryRun;
    this.#onClosed = options.onClosed;
    this.root = new RootHash(ctx.key, { maxIntervals: options.maxIntervals });
  }

  /** `maxIntervals`: the root hash's cap on disjoint closed intervals. */
  static create(ctx: SideContext, options: WriterOptions): Promise<DestinationWriter> {
    return Promise.resolve(new DestinationWriter(ctx, options));
  }

  get openRanges(): number {
    return this.#open.size;
  }

  /**
   * Opens the range at `offset` whose digests these are (one per block; the writer keeps and
   * updates this array). The caller checks that ranges do not overlap.
   */
  open(offset: number, digests: Uint8Array): void {
    if (this.#open.has(offset)) throw new ProtocolError(`range at ${offset} is already open`);
    const blocks = digests.length / DIGEST_SIZE;
    const end = Math.min(this.#ctx.size, offset + blocks * this.#ctx.blockSize);
    const bits = Math.ceil(blocks / 8);
    this.#open.set(offset, { offset, end, digests, written: new Uint8Array(bits), refined: new Uint8Array(bits), writes: [] });
  }

  /**
   * Checks a REFINE of [offset, offset + length) at once and marks its blocks refined:
   * a ProtocolError unless it is whole blocks inside one open range, none written or
   * refined before, none the destination holds as zeros (their digests as sent).
   */
  refine(offset: number, length: number): void {
    const bs = this.#ctx.blockSize;
    const r = this.#rangeOf(offset);
    const end = offset + length;
    if (!r || end > r.end || offset % bs !== 0 || (end % bs !== 0 && end !== this.#ctx.size)) {
      throw new ProtocolError(`REFINE [${offset}, ${end}) is not whole blocks inside an open range`);
    }
    const first = (offset - r.offset) / bs;
    const count = Math.ceil(length / bs);
    for (let b = first; b < first + count; b++) {
      const bit = 1 << (b & 7);
      if ((r.written[b >> 3] | r.refined[b >> 3]) & bit) throw new ProtocolError(`REFINE [${offset}, ${end}): block ${r.offset / bs + b} was written or refined before`);
      if (isZeroDigest(r.digests, b)) throw new ProtocolError(`REFINE [${offset}, ${end}): block ${r.offset / bs + b} is all zero here`);
    }
    for (let b = first; b < first + count; b++) r.refined[b >> 3] |= 1 << (b & 7);
  }

  /**
   * Registers the write at once (so a later close waits for it) and returns its completion.
   * Throws a ProtocolError at once unless it lies block-aligned inside one open range, on
   * blocks of that range not written before.
   */
  write(op: WriteOp): Promise<void> {
    const bs = this.#ctx.blockSize;
    const r = this.#rangeOf(op.offset);
    const end = op.offset + op.length;
    if (!r || end > r.end || op.offset % bs !== 0 || (end % bs !== 0 && end !== this.#ctx.size)) {
      throw new ProtocolError(`write [${op.offset}, ${end}) is not block-aligned inside an open range`);
    }
    const first = (op.offset - r.offset) / bs;
    const count = Math.ceil(op.length / bs);
    for (let b = first; b < first + count; b++) {
      if (r.written[b >> 3] & (1 << (b & 7))) throw new ProtocolError(`write [${op.offset}, ${end}) writes block ${r.offset / bs + b} twice`);
    }
    for (let b = first; b < first + count; b++) r.written[b >> 3] |= 1 << (b & 7);
    const p = this.#apply(r, op);
    r.writes.push(p);
    return p;
  }

  /**
   * Closes the range at `offset` at once (no write is accepted in it from now on) and returns
   * the completion: every write registered in it applied, its digests added to the root.
   * Throws a ProtocolError at once when no range is open there or, given `length`, when the
   * open range is not exactly [offset, offset + length).
   */
  close(offset: number, length?: number): Promise<void> {
    const r = this.#open.get(offset);
    if (!r) throw new ProtocolError(`no open range at ${offset}`);
    if (length !== undefined && r.end !== offset + length) {
      throw new ProtocolError(`range [${offset}, ${offset + length}) closed, but the open range is [${offset}, ${r.end})`);
    }
    this.#open.delete(offset);
    return Promise.all(r.writes).then(() => {
      this.root.add(offset / this.#ctx.blockSize, r.digests);
      this.#onClosed?.(offset / this.#ctx.blockSize, r.digests);
    });
  }

  #rangeOf(offset: number): OpenRange | undefined {
    for (const r of this.#open.values()) if (offset >= r.offset && offset < r.end) return r;
    return undefined;
  }

  async #apply(r: OpenRange, op: WriteOp): Promise<void> {
    const { blockSize: bs, store, stats } = this.#ctx;
    const at = ((op.offset - r.offset) / bs) * DIGEST_SIZE;
    if (op.kind === "patch") {
      this.#patchHasher ??= createBlockHasher(this.#ctx.hash, this.#ctx.key);
      await applyPatch(this.#ctx, op, { hasher: await this.#patchHasher, dryRun: this.#dryRun, digests: r.digests, first: at / DIGEST_SIZE });
      // Applied: the record (header, both masks, then the payload) is read no more.
      releaseBuffer(op.payload, { headBytes: HEADER_SIZE + 2 * op.data.length });
      return;
    }
    if (op.kind === "zero") {
      r.digests.fill(0, at, at + Math.ceil(op.length / bs) * DIGEST_SIZE);
      if (this.#dryRun) return;
      stats.holeMethod = await store.punchHole(op.offset, op.length);
      stats.bytesPunched += op.length;
      return;
    }
    if (!op.payload) {
      if (!this.#dryRun) throw new ProtocolError("DATA without payload outside a dry run");
      r.digests.fill(0xff, at, at + Math.ceil(op.length / bs) * DIGEST_SIZE);
      return;
    }
    // Decompressed, hashed and zero-scanned in a worker; the payload is copied once, into the
    // pool's arena (worker-pool.ts), and a raw one is then written from the record itself.
    const result = await this.#ctx.pool.unpack({
      payload: op.payload,
      zstd: op.zstd,
      length: op.length,
      offset: op.offset,
      blockSize: bs,
      hash: this.#ctx.hash,
      key: this.#ctx.key,
      page: PAGE,
    });
    const { digests, zeroPages } = result;
    const data = result.data ?? op.payload;
    const before = r.digests.slice(at, at + digests.length);
    r.digests.set(digests, at);
    if (this.#dryRun) return;
    await this.#writeSparse(data, op.offset, zeroPages, (block) => isZeroDigest(before, block));
    // Written: nothing reads the record or the decompressed bytes again.
    releaseBuffer(op.payload, { headBytes: HEADER_SIZE });
    releaseBuffer(result.data);
  }

  /**
   * Writes the non-zero pages and punches the zero ones (PAGE bytes, whatever the block
   * size), so zeros never take space, even inside a partly-zero block. Zero pages of a
   * block that was all zero before are already zero: they are left alone.
   */
  async #writeSparse(data: Uint8Array, offset: number, zeroPages: Uint8Array, wasZero: (block: number) => boolean): Promise<void> {
    const { blockSize: bs, store, stats } = this.#ctx;
    const pages = Math.ceil(data.length / PAGE);
    const action = (i: number): "write" | "punch" | "skip" => {
      if (zeroPages[i] === 0) return "write";
      return wasZero(Math.floor((i * PAGE) / bs)) ? "skip" : "punch";
    };
    let i = 0;
    while (i < pages) {
      const kind = action(i);
      let j = i + 1;
      while (j < pages && action(j) === kind) j++;
      const from = i * PAGE;
      const to = Math.min(data.length, j * PAGE);
      if (kind === "punch") {
        stats.holeMethod = await store.punchHole(offset + from, to - from);
        stats.bytesPunched += to - from;
      } else if (kind === "write") {
        await store.write(data.subarray(from, to), offset + from);
        stats.bytesWritten += to - from;
      }
      i = j;
    }
  }

}
