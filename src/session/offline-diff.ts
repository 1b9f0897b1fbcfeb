/**
 * `ssync diff SRC dst.sig -o update.ssync`: the sealed update that turns the destination the
 * signature describes into SRC (spec §9.3).
 *
 * 1. INFO: hash, block size, both sizes, the signature's key (inside the sealed stream: only
 *    the recipient learns it).
 * 2. For each range of the fixed partition, in order: the signature's digests of it (checked
 *    runs), seen in the new geometry (offline-geometry.ts); SRC's blocks read once along its
 *    data extents and compared in the worker pool (engine/source-side.ts diffRange: holes
 *    skipped, zstd per block when it pays); its DATA and ZERO ops become records.
 * 3. The signature's trailer: its root must be the root of the digests read, and its SHA-256
 *    the file's; END with the root before (the signature's) and after (SRC's, same key).
 * A SRC that changes while it is read fails the diff (SourceWatch); a failure leaves no file.
 */
import { createHash } from "node:crypto";
import { decodeRuns, isZeroDigest, ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import {
  checkRangeRunsLength,
  decodeSignatureHeader,
  OFFLINE_RANGE_BLOCKS,
  OfflineFormatError,
  rangeCount,
  SIGNATURE_HEADER_SIZE,
  SIGNATURE_TRAILER_SIZE,
  type SignatureHeader,
} from "../../protocol/offline-format.ts";
import { HIGH_LEVEL } from "../engine/compress-policy.ts";
import { ReadAhead } from "../engine/read-ahead.ts";
import { RootHash } from "../engine/root-hash.ts";
import { type SideContext, SideStats } from "../engine/side-context.ts";
import { diffRange } from "../engine/source-side.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import type { SequentialReader } from "../storage/offline-file.ts";
import type { Storage } from "../storage/storage.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { rangeBlocks, rangeBytes, targetDigests } from "./offline-geometry.ts";
import type { SealedWriter } from "./offline-stream.ts";
import { OFFLINE_LOOKAHEAD_JOBS } from "./offline-signature.ts";
import { SourceWatch } from "./source-watch.ts";

/** A signature file read front to back, its bytes summed for the trailer's check. */
export class SignatureReader {
  readonly #in: SequentialReader;
  readonly #sum = createHash("sha256");
  readonly header: SignatureHeader;

  private constructor(input: SequentialReader, header: SignatureHeader) {
    this.#in = input;
    this.header = header;
  }

  static async open(input: SequentialReader): Promise<SignatureReader> {
    const b = await input.need(SIGNATURE_HEADER_SIZE, "its header");
    const r = new SignatureReader(input, decodeSignatureHeader(b));
    r.#sum.update(b);
    return r;
  }

  /** Range `k`'s digests (its checked runs). */
  async range(k: number): Promise<Uint8Array> {
    const h = this.header;
    const w = await this.#take(4, `range ${k}`);
    const n = new DataView(w.buffer, w.byteOffset, 4).getUint32(0);
    checkRangeRunsLength(n, k);
    const runs = await this.#take(n, `range ${k}`);
    try {
      return decodeRuns(runs, rangeBlocks(k, h.size, h.blockSize), `signature range ${k}`);
    } catch (e) {
      if (e instanceof ProtocolError) throw new OfflineFormatError(e.message);
      throw e;
    }
  }

  /** The trailer: checks the file's SHA-256 and its end; returns the root it holds. */
  async finish(): Promise<Uint8Array> {
    const root = await this.#take(DIGEST_SIZE, "its trailer");
    const sum = await this.#in.need(SIGNATURE_TRAILER_SIZE - DIGEST_SIZE, "its trailer");
    if (!equalBytes(new Uint8Array(this.#sum.digest()), sum)) throw new OfflineFormatError("it is damaged: its checksum does not match");
    if (!(await this.#in.atEnd())) throw new OfflineFormatError("it goes on after its trailer");
    return root;
  }

  async #take(n: number, what: string): Promise<Uint8Array> {
    const b = await this.#in.need(n, what);
    this.#sum.update(b);
    return b;
  }
}

export interface DiffReport {
  sizeBefore: number;
  sizeAfter: number;
  blockSize: number;
  blocksSent: number;
  bytesSent: number;
  /** DATA payload bytes in the update (after zstd). */
  dataBytesInUpdate: number;
  bytesZeroed: number;
  bytesRead: number;
  holeBytesSkipped: number;
  updateBytes: number;
  seconds: number;
}

export async function writeUpdate(
  source: Storage,
  sig: SignatureReader,
  out: SealedWriter,
  o: { pool: WorkerPool; allowShrink: boolean; signal: AbortSignal; updateBytes: () => number },
): Promise<DiffReport> {
  const started = performance.now();
  const h = sig.header;
  const bs = h.blockSize;
  const sizeBefore = h.size;
  const sizeAfter = source.size;
  const watch = await SourceWatch.start(source);
  const stats = new SideStats();
  const ctx: SideContext = { pool: o.pool, store: source, hash: h.hash, key: h.key, blockSize: bs, size: sizeAfter, stats, signal: o.signal, readAhead: new ReadAhead(source) };
  await out.record({ type: "INFO", info: { hash: h.hash, blockSize: bs, sizeBefore, sizeAfter, key: h.key, allowShrink: o.allowShrink } });
  const before = new RootHash(h.key);
  const after = new RootHash(h.key);
  let ops = 0;
  const ranges = Math.max(rangeCount(sizeBefore, bs), rangeCount(sizeAfter, bs));
  for (let k = 0; k < ranges; k++) {
    const old = rangeBlocks(k, sizeBefore, bs) > 0 ? await sig.range(k) : new Uint8Array(0);
    if (old.length > 0) before.add(k * OFFLINE_RANGE_BLOCKS, old);
    if (sizeAfter < sizeBefore && !o.allowShrink) refuseDataPastEnd(old, { k, sizeAfter, bs, path: source.path });
    const range = rangeBytes(k, sizeAfter, bs);
    if (range.length === 0) continue;
    const dst = targetDigests(old, { k, sizeBefore, sizeAfter, blockSize: bs });
    const src = await diffRange(ctx, { ...range, dst }, {
      zstdLevel: () => HIGH_LEVEL,
      dryRun: false,
      lookahead: OFFLINE_LOOKAHEAD_JOBS,
      emit: async (op) => {
        ops++;
        switch (op.kind) {
          case "data":
            await out.record({ type: "DATA", offset: op.offset, length: op.length, zstd: op.zstd, payload: op.payload! });
            return;
          case "zero":
            await out.record({ type: "ZERO", offset: op.offset, length: op.length });
            return;
          case "patch":
          case "refine":
            throw new Error(`Cannot write the update: unexpected ${op.kind} op (refinement is off)`);
          default:
            throw new TypeError(`unknown op ${(op satisfies never as { kind: string }).kind}`);
        }
      },
    });
    await watch?.check();
    after.add(k * OFFLINE_RANGE_BLOCKS, src);
  }
  const sigRoot = await sig.finish();
  if (!equalBytes(sigRoot, before.finish(sizeBefore, bs))) throw new OfflineFormatError("the signature's root does not match its digests: the file is damaged");
  await watch?.check();
  await out.record({ type: "END", ops, rootBefore: sigRoot, rootAfter: after.finish(sizeAfter, bs) });
  await out.finish();
  return {
    sizeBefore,
    sizeAfter,
    blockSize: bs,
    blocksSent: stats.blocksSent,
    bytesSent: stats.bytesSent,
    dataBytesInUpdate: stats.dataBytesOnWire,
    bytesZeroed: stats.bytesZeroed,
    bytesRead: stats.bytesRead,
    holeBytesSkipped: stats.holeBytesSkipped,
    updateBytes: o.updateBytes(),
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Shrinking: a block at or past the new end with data (a digest that is not zero) may hold
 * data past the end; a partial new last block counts whole (its digest cannot tell which of
 * its bytes are data). Refused unless --allow-shrink, as a push is (README "No silent traps").
 */
function refuseDataPastEnd(old: Uint8Array, o: { k: number; sizeAfter: number; bs: number; path: string }): void {
  const first = o.k * OFFLINE_RANGE_BLOCKS;
  const from = Math.floor(o.sizeAfter / o.bs);
  for (let i = Math.max(0, from - first); i < old.length / DIGEST_SIZE; i++) {
    if (isZeroDigest(old, i)) continue;
    const at = Math.max(o.sizeAfter, (first + i) * o.bs);
    throw new Error(
      `Cannot make an update that shrinks the destination to ${o.sizeAfter} bytes (the size of ${o.path}): its signature shows data past the new end ` +
        `(block ${first + i}, at byte ${at}); give --allow-shrink to cut it off`,
    );
  }
}
