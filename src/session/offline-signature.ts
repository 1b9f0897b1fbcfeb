/**
 * `ssync signature DST -o dst.sig`: the destination's block digests under a fresh key, for a
 * source machine with no link to it (spec §9.2).
 *
 * 1. A fresh random hash key; the header: size, block size, hash, key, the host key the
 *    update must be sealed to.
 * 2. For each range of the fixed partition (offline-geometry.ts): its digests (holes known
 *    without reading, data in the worker pool), written as digest runs, added to the root.
 * 3. The trailer: the root, and SHA-256 of every byte before it.
 * A file that changes while it is read fails the signature (SourceWatch), so a signature is
 * one image of the file.
 */
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import { encodeRuns } from "../../protocol/codec.ts";
import { DIGEST_SIZE, HASH_KEY_SIZE, type HashAlgorithm } from "../../protocol/constants.ts";
import { encodeSignatureHeader, OFFLINE_RANGE_BLOCKS, rangeCount } from "../../protocol/offline-format.ts";
import { digestRange } from "../engine/destination-side.ts";
import { ReadAhead } from "../engine/read-ahead.ts";
import { RootHash } from "../engine/root-hash.ts";
import { type SideContext, SideStats } from "../engine/side-context.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import type { SequentialWriter } from "../storage/offline-file.ts";
import type { Storage } from "../storage/storage.ts";
import { rangeBytes } from "./offline-geometry.ts";
import { SourceWatch } from "./source-watch.ts";

/** Jobs a range runs ahead: the offline commands take one range at a time, so these keep the workers busy. */
export const OFFLINE_LOOKAHEAD_JOBS = 16;

export interface SignatureReport {
  size: number;
  blockSize: number;
  hash: HashAlgorithm;
  blocks: number;
  /** Blocks with data (a digest that is not zero). */
  dataBlocks: number;
  bytesRead: number;
  holeBytesSkipped: number;
  signatureBytes: number;
  seconds: number;
}

export async function writeSignature(
  store: Storage,
  out: SequentialWriter,
  o: { pool: WorkerPool; blockSize: number; hash: HashAlgorithm; hostKey: Uint8Array; signal: AbortSignal },
): Promise<SignatureReport> {
  const started = performance.now();
  const key = new Uint8Array(randomBytes(HASH_KEY_SIZE));
  const watch = await SourceWatch.start(store);
  const stats = new SideStats();
  const ctx: SideContext = { pool: o.pool, store, hash: o.hash, key, blockSize: o.blockSize, size: store.size, stats, signal: o.signal, readAhead: new ReadAhead(store) };
  const sum = createHash("sha256");
  const put = async (b: Uint8Array) => {
    sum.update(b);
    await out.write(b);
  };
  await put(encodeSignatureHeader({ hash: o.hash, blockSize: o.blockSize, size: store.size, key, hostKey: o.hostKey }));
  const root = new RootHash(key);
  let dataBlocks = 0;
  for (let k = 0; k < rangeCount(store.size, o.blockSize); k++) {
    const range = rangeBytes(k, store.size, o.blockSize);
    const digests = await digestRange(ctx, range, { lookahead: OFFLINE_LOOKAHEAD_JOBS, punchZeroBlocks: false });
    await watch?.check();
    for (let i = 0; i < digests.length; i += DIGEST_SIZE) if (digests.subarray(i, i + DIGEST_SIZE).some((b) => b !== 0)) dataBlocks++;
    const runs = encodeRuns(digests);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(runs.length);
    await put(length);
    await put(runs);
    root.add(k * OFFLINE_RANGE_BLOCKS, digests);
  }
  const rootHash = root.finish(store.size, o.blockSize);
  await put(rootHash);
  await out.write(sum.digest());
  return {
    size: store.size,
    blockSize: o.blockSize,
    hash: o.hash,
    blocks: Math.ceil(store.size / o.blockSize),
    dataBlocks,
    bytesRead: stats.bytesRead,
    holeBytesSkipped: stats.holeBytesSkipped,
    signatureBytes: out.bytes,
    seconds: (performance.now() - started) / 1000,
  };
}
