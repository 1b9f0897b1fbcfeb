/**
 * `ssync apply update.ssync DST`: a sealed update applied crash-safely (spec §9.4). The caller
 * has checked the clear header (recipient, sender) and opened the stream; this reads INFO,
 * then every record, each chunk authenticated before any of its bytes is used.
 *
 * 1. DST is opened as a network sync's destination opens it: locked, a journal left by an
 *    interrupted apply or sync recovered first (rolled back or completed), changes going to a
 *    new journal (dry run: read-only, no lock, nothing written).
 * 2. Its size decides: the signature's size → apply; the update's target size (and not the
 *    signature's) → only check whether the update is applied already; any other → refused at
 *    once, nothing read.
 * 3. For each range of the fixed partition: DST's digests under the update's key (its current
 *    geometry: holes not read), into the current root; when applying, the range opens in the
 *    DestinationWriter (new geometry, offline-geometry.ts) and its DATA and ZERO records are
 *    written to the journal (unpacked, hashed and zero-scanned in the worker pool), bounded by
 *    a byte window; the range's final digests go into the root after.
 * 4. END: its record count; nothing after it. Then the roots: the current root must be the
 *    root before (else: already applied when it is the root after; else refused: DST is not
 *    the state the signature was made of), and the root after DST's digests after the writes
 *    must be END's root after. Only then the size is set and the journal committed (§8).
 * A failure anywhere before the commit — a forged, damaged or truncated update, another state
 * of DST — disposes the store without commit: the journal is removed, DST is untouched.
 */
import { ProtocolError } from "../../protocol/codec.ts";
import { HEADER_SIZE } from "../../protocol/constants.ts";
import { OFFLINE_RANGE_BLOCKS, OfflineFormatError, rangeCount, type UpdateInfo, type UpdateRecord } from "../../protocol/offline-format.ts";
import { DestinationWriter, digestRange } from "../engine/destination-side.ts";
import { ReadAhead } from "../engine/read-ahead.ts";
import { RootHash } from "../engine/root-hash.ts";
import { type SideContext, SideStats } from "../engine/side-context.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import { openDestination } from "../storage/open-destination.ts";
import { ByteWindow } from "../util/byte-window.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { MismatchError } from "../util/errors.ts";
import { rangeBytes, targetDigests } from "./offline-geometry.ts";
import type { RecordReader } from "./offline-stream.ts";
import { OFFLINE_LOOKAHEAD_JOBS } from "./offline-signature.ts";
import { DATA_WINDOW_BYTES } from "./session-limits.ts";

export interface ApplyReport {
  destination: string;
  dryRun: boolean;
  /** DST was already the update's result (a rerun after a commit): nothing to do. */
  alreadyApplied: boolean;
  sizeBefore: number;
  sizeAfter: number;
  blockSize: number;
  /** Blocks and bytes the update's DATA writes, and the bytes its ZERO records make holes. */
  blocksChanged: number;
  bytesChanged: number;
  bytesZeroed: number;
  /** Of DST: read to hash it, skipped as holes, written, punched. */
  bytesRead: number;
  holeBytesSkipped: number;
  bytesWritten: number;
  bytesPunched: number;
  seconds: number;
}

export async function applyUpdate(
  records: RecordReader,
  dst: string,
  o: { pool: WorkerPool; dryRun: boolean; lockWaitMs?: number; log?: (m: string) => void; signal: AbortSignal; ffi?: boolean },
): Promise<ApplyReport> {
  const started = performance.now();
  const first = await records.next();
  if (first.type !== "INFO") throw new OfflineFormatError(`the update starts with ${first.type}, not INFO`);
  const info = first.info;
  const bs = info.blockSize;
  const store = await openDestination(dst, { create: false, readOnly: o.dryRun, lockWaitMs: o.lockWaitMs, log: o.log, ffi: o.ffi });
  try {
    const current = store.size;
    const apply = current === info.sizeBefore;
    if (!apply && current !== info.sizeAfter) {
      throw new MismatchError(
        `Cannot apply the update to ${dst}: it is ${current} bytes, and the update was made against a signature of it at ${info.sizeBefore} bytes ` +
          `(to make it ${info.sizeAfter}); make a new signature of ${dst} and a new update from it`,
      );
    }
    const stats = new SideStats();
    const ctx: SideContext = { pool: o.pool, store, hash: info.hash, key: info.key, blockSize: bs, size: info.sizeAfter, stats, signal: o.signal, readAhead: new ReadAhead(store) };
    const writer = await DestinationWriter.create(ctx, { dryRun: o.dryRun });
    const currentRoot = new RootHash(info.key);
    const window = new ByteWindow(DATA_WINDOW_BYTES);
    const counted = { ops: 0, blocksChanged: 0, bytesChanged: 0, bytesZeroed: 0 };
    let failure: unknown;
    let next = 0; // records ascend: the next may not start before this
    const ranges = Math.max(rangeCount(current, bs), rangeCount(info.sizeAfter, bs));
    for (let k = 0; k < ranges; k++) {
      o.signal.throwIfAborted();
      const here = rangeBytes(k, current, bs);
      const old = await digestRange(ctx, here, { lookahead: OFFLINE_LOOKAHEAD_JOBS, punchZeroBlocks: apply && !o.dryRun });
      if (here.length > 0) currentRoot.add(k * OFFLINE_RANGE_BLOCKS, old);
      const target = rangeBytes(k, info.sizeAfter, bs);
      if (apply && target.length > 0) writer.open(target.offset, targetDigests(old, { k, sizeBefore: current, sizeAfter: info.sizeAfter, blockSize: bs }));
      const end = target.offset + target.length;
      for (;;) {
        const r = await records.peek();
        if (r.type !== "DATA" && r.type !== "ZERO") break;
        if (r.offset >= end) break;
        await records.next();
        if (r.offset < next) throw new OfflineFormatError(`${r.type} at ${r.offset} does not follow the record before it (which ends at ${next})`);
        next = r.offset + r.length;
        counted.ops++;
        if (r.type === "DATA") {
          counted.blocksChanged += Math.ceil(r.length / bs);
          counted.bytesChanged += r.length;
        } else {
          counted.bytesZeroed += r.length;
        }
        if (!apply) continue;
        const bytes = HEADER_SIZE + (r.type === "DATA" ? r.payload.length : 0);
        await window.acquire(bytes, o.signal);
        let written: Promise<void>;
        try {
          written = writer.write(r.type === "DATA" ? { kind: "data", offset: r.offset, length: r.length, payload: r.payload, zstd: r.zstd } : { kind: "zero", offset: r.offset, length: r.length });
        } catch (e) {
          window.release(bytes);
          throw formatError(e);
        }
        written.then(() => window.release(bytes), (e) => {
          window.release(bytes);
          failure ??= e;
        });
        if (failure !== undefined) throw formatError(failure);
      }
      if (apply && target.length > 0) {
        await writer.close(target.offset).catch((e) => {
          throw formatError(e);
        });
      }
    }
    const last = await records.next();
    if (last.type !== "END") throw new OfflineFormatError(recordWhere(last, info));
    if (last.ops !== counted.ops) throw new OfflineFormatError(`END counts ${last.ops} records, the update holds ${counted.ops}`);
    await records.expectEnd();
    const mine = currentRoot.finish(current, bs);
    const report = (alreadyApplied: boolean): ApplyReport => ({
      destination: dst,
      dryRun: o.dryRun,
      alreadyApplied,
      sizeBefore: info.sizeBefore,
      sizeAfter: info.sizeAfter,
      blockSize: bs,
      ...counted,
      bytesRead: stats.bytesRead,
      holeBytesSkipped: stats.holeBytesSkipped,
      bytesWritten: alreadyApplied ? 0 : stats.bytesWritten,
      bytesPunched: alreadyApplied ? 0 : stats.bytesPunched,
      seconds: (performance.now() - started) / 1000,
    });
    if (current === info.sizeAfter && equalBytes(mine, last.rootAfter) && !(apply && equalBytes(mine, last.rootBefore))) return report(true);
    if (!apply || !equalBytes(mine, last.rootBefore)) {
      throw new MismatchError(
        `Cannot apply the update to ${dst}: it is not the state the update was made against (its root under the signature's key differs: ` +
          `${dst} changed after its signature was made, or the signature was of another file); make a new signature and a new update`,
      );
    }
    const result = writer.root.finish(info.sizeAfter, bs);
    if (!equalBytes(result, last.rootAfter)) {
      throw new MismatchError(`Cannot apply the update to ${dst}: the result would not match the source (root after differs); nothing was changed`);
    }
    if (!o.dryRun) {
      if (store.size !== info.sizeAfter) await store.setSize(info.sizeAfter);
      await store.commit();
    }
    return report(false);
  } finally {
    await store[Symbol.asyncDispose]();
  }
}

/** A record the DestinationWriter refused (outside the range, twice the same block, bad zstd): the update is malformed. */
function formatError(e: unknown): unknown {
  return e instanceof ProtocolError ? new OfflineFormatError(`the update is malformed: ${e.message}`) : e;
}

function recordWhere(r: UpdateRecord, info: UpdateInfo): string {
  if (r.type === "DATA" || r.type === "ZERO") return `${r.type} at ${r.offset} lies past the update's size ${info.sizeAfter}`;
  return `${r.type} where a DATA, ZERO or END record must be`;
}
