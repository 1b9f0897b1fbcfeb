/**
 * What goes over the wire and what hits the disk in a sync through the real engine: the
 * client and server sessions over the in-memory pair, the client's end recorded, both
 * stores (real sparse files) recorded. Every assertion is exact: one stray DATA on an
 * identical rerun, or a zeroed block sent as DATA, fails it.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { platform } from "../src/platform/platform.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { type RecordedSync, recordedSync } from "./helpers/recorded-sync.ts";
import type { RecordingChannel } from "./helpers/recording-channel.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, patternBytes, withTempDir } from "./helpers/sparse.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB;
const PAGE = 4 * KiB;
const T = { timeout: 30_000 };
/** Not a multiple of the block size: the last block is 1234 bytes. */
const SIZE = 8 * MiB + 1234;

const pool = new WorkerPool({ size: 2 });
after(() => pool[Symbol.asyncDispose]());

/**
 * Data in [0, 2 MiB), in [5 MiB + 100, 6 MiB + 100) (block 80 starts with 100 bytes of hole,
 * block 96 holds 100 bytes of data, then zeros) and in the short last block; holes elsewhere.
 */
function makeSource(file: string): void {
  makeSparseFile(file, {
    size: SIZE,
    chunks: [{ offset: 0, length: 2 * MiB, seed: 1 }, { offset: 5 * MiB + 100, length: MiB, seed: 2 }, { offset: 8 * MiB, length: 1234, seed: 3 }],
  });
}

function pwrite(file: string, bytes: Uint8Array, position: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, position);
  } finally {
    fs.closeSync(fd);
  }
}

/** The ranges tile [0, size) exactly: ascending, no gap, no overlap. */
function assertTiles(ranges: [number, number][], size: number, what: string): void {
  let at = 0;
  for (const [offset, length] of ranges) {
    assert.equal(offset, at, `${what}: range at ${offset}, expected ${at}`);
    at += length;
  }
  assert.equal(at, size, `${what}: ranges end at ${at}, not ${size}`);
}

/** Push: SIGS tile the file, each answered once; RANGE_DONE closes exactly those ranges; one ACK per write (DATA, ZERO, PATCH), RANGE_DONE and FLUSH; one SUB_DIGESTS per REFINE. */
function assertPushShape(wire: RecordingChannel, size: number): void {
  const sigs = wire.ranges("sent", "SIGS");
  assertTiles(sigs, size, "SIGS");
  assert.deepEqual(wire.ranges("received", "SIGS_REPLY"), sigs, "one SIGS_REPLY per SIGS, same range");
  assert.deepEqual(wire.ranges("sent", "RANGE_DONE"), sigs, "RANGE_DONE closes every SIGS range");
  const sent = wire.countByType("sent");
  const acked = (sent.DATA ?? 0) + (sent.ZERO ?? 0) + (sent.PATCH ?? 0) + (sent.RANGE_DONE ?? 0) + (sent.FLUSH ?? 0);
  assert.equal(wire.countByType("received").ACK, acked, "one ACK per DATA, ZERO, PATCH, RANGE_DONE and FLUSH");
  assert.deepEqual(wire.ranges("received", "SUB_DIGESTS"), wire.ranges("sent", "REFINE"), "one SUB_DIGESTS per REFINE, same range");
}

/** Pull: READ_DIFF tile the file; each ends with one RANGE_DONE of its range. */
function assertPullShape(wire: RecordingChannel, size: number): void {
  const asked = wire.ranges("sent", "READ_DIFF");
  assertTiles(asked, size, "READ_DIFF");
  assert.deepEqual(wire.ranges("received", "RANGE_DONE"), asked, "one RANGE_DONE per READ_DIFF, same range");
}

/** The source side is only read. */
function assertSourceUntouched(r: RecordedSync): void {
  assert.deepEqual(r.source.writes, [], "source writes");
  assert.deepEqual(r.source.punches, [], "source punches");
  assert.deepEqual(r.source.setSizes, [], "source size changes");
  assert.equal(r.source.syncs, 0, "source syncs");
}

async function push(src: string, dst: string, options: { refine?: boolean } = {}): Promise<RecordedSync> {
  const r = await recordedSync(src, dst, { mode: "push", blockSize: BS, pool, refine: options.refine });
  assert.equal(fileHash(dst), fileHash(src), "bytes");
  return r;
}

describe("wire and disk: push", () => {
  test("a first copy writes exactly the source's non-zero pages, punches nothing, sizes once", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      const r = await push(src, dst);
      assertPushShape(r.wire, SIZE);
      // A new file holds only zeros: no REFINE; block 96 (one data page, then zeros) goes as a PATCH of that page.
      r.wire.assertSequence("sent", { first: ["OPEN"], then: ["SIGS", "DATA", "PATCH", "RANGE_DONE"], last: ["FLUSH", "COMMIT"] });
      r.wire.assertSequence("received", { first: ["OPEN_OK"], then: ["SIGS_REPLY", "ACK"], last: ["ACK", "COMMIT_OK"] });
      assert.deepEqual(r.wire.ranges("sent", "PATCH"), [[96 * BS, BS]], "PATCH ranges");
      // Blocks with any data: 0–31, 80–96, 128 (the short last block).
      const dataBlocks = [...Array(32).keys(), ...Array.from({ length: 17 }, (_, i) => 80 + i), 128];
      const sentBlocks = [...r.wire.ofType("sent", "DATA"), ...r.wire.ofType("sent", "PATCH")].flatMap((m) => blocks(m.offset!, m.length!, BS));
      assert.deepEqual(sentBlocks.sort((a, b) => a - b), dataBlocks, "DATA or PATCH carries each data block once");
      assert.equal(r.report.local.bytesSent, 50 * BS - (BS - PAGE) - (BS - 1234), "DATA bytes: every block, but only block 96's data page");
      // Pages with any data: [0, 2 MiB), [5 MiB, 6 MiB + 4 KiB), [8 MiB, SIZE).
      const dataPages = [...range(0, 512), ...range(1280, 1537), 2048];
      assert.deepEqual(pagesOf(r.destination.writes), dataPages, "written pages");
      assert.deepEqual(r.destination.punches, [], "nothing to punch in a new file");
      assert.deepEqual(r.destination.setSizes, [SIZE]);
      assert.ok(r.destination.syncs >= 1, "fsync before COMMIT");
      assertSourceUntouched(r);
      if (platform.ffi) assert.ok(allocatedBytesOf(dst) <= allocatedBytesOf(src), "allocates no more than the source");
    });
  });

  test("an identical rerun sends only SIGS, RANGE_DONE, FLUSH, COMMIT and changes nothing on disk", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      await push(src, dst);
      const r = await push(src, dst);
      r.wire.assertSequence("sent", { first: ["OPEN"], then: ["SIGS", "RANGE_DONE"], last: ["FLUSH", "COMMIT"] });
      r.wire.assertSequence("received", { first: ["OPEN_OK"], then: ["SIGS_REPLY", "ACK"], last: ["ACK", "COMMIT_OK"] });
      assertPushShape(r.wire, SIZE);
      assert.deepEqual(r.destination.writes, [], "destination writes");
      assert.deepEqual(r.destination.punches, [], "destination punches");
      assert.deepEqual(r.destination.setSizes, [], "destination size changes");
      assert.ok(r.destination.syncs >= 1, "FLUSH still fsyncs");
      assertSourceUntouched(r);
    });
  });

  test("blocks that became zeros (written zeros, a punched hole) go as ZERO and are punched, never written", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      await push(src, dst);
      const allocatedBefore = allocatedBytesOf(dst);
      pwrite(src, new Uint8Array(BS), 3 * BS); // allocated zeros: read, hashed as zero
      {
        await using s = await openDestination(src, { create: false, inplace: true }); // a real hole (zeros without FFI)
        await s.punchHole(82 * BS, BS);
      }
      const r = await push(src, dst);
      r.wire.assertSequence("sent", { first: ["OPEN"], then: ["SIGS", "ZERO", "RANGE_DONE"], last: ["FLUSH", "COMMIT"] });
      assert.deepEqual(r.wire.ranges("sent", "ZERO"), [[3 * BS, BS], [82 * BS, BS]], "ZERO ranges");
      assert.equal(r.wire.countByType("sent").DATA, undefined, "no DATA");
      assertPushShape(r.wire, SIZE);
      assert.deepEqual(r.destination.sortedPunches(), [[3 * BS, BS], [82 * BS, BS]], "punched exactly the zeroed blocks");
      assert.deepEqual(r.destination.writes, [], "nothing written");
      assert.deepEqual(r.destination.setSizes, []);
      assertSourceUntouched(r);
      if (platform.ffi) {
        // ext4 may spend one 4 KiB block of extent tree on the split extents.
        const after = allocatedBytesOf(dst);
        assert.ok(after <= allocatedBefore - 2 * BS + PAGE, `the two blocks still take space: ${allocatedBefore} → ${after}`);
      }
    });
  });

  test("a 4 KiB change inside one 64 KiB block: one REFINE, one PATCH of that page, one page-sized write", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      await push(src, dst);
      pwrite(src, patternBytes(4 * KiB, { seed: 77 }), 10 * BS + 8 * KiB);
      const r = await push(src, dst);
      r.wire.assertSequence("sent", { first: ["OPEN"], then: ["SIGS", "REFINE", "PATCH", "RANGE_DONE"], last: ["FLUSH", "COMMIT"] });
      assert.deepEqual(r.wire.ranges("sent", "REFINE"), [[10 * BS, BS]], "REFINE ranges");
      assert.deepEqual(r.wire.ranges("sent", "PATCH"), [[10 * BS, BS]], "PATCH ranges");
      assert.equal(r.wire.countByType("sent").DATA, undefined, "no DATA");
      assert.equal(r.report.local.bytesSent, PAGE, "DATA bytes: one page");
      assertPushShape(r.wire, SIZE);
      assert.deepEqual(r.destination.sortedWrites(), [[10 * BS + 8 * KiB, PAGE]], "writes");
      assert.deepEqual(r.destination.punches, [], "punches");
      assert.deepEqual(r.destination.setSizes, []);
      assertSourceUntouched(r);
    });
  });

  test("without refinement, a 4 KiB change inside one 64 KiB block: one DATA of that block, one block-sized write", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      await push(src, dst);
      pwrite(src, patternBytes(4 * KiB, { seed: 77 }), 10 * BS + 8 * KiB);
      const r = await push(src, dst, { refine: false });
      r.wire.assertSequence("sent", { first: ["OPEN"], then: ["SIGS", "DATA", "RANGE_DONE"], last: ["FLUSH", "COMMIT"] });
      assert.deepEqual(r.wire.ranges("sent", "DATA"), [[10 * BS, BS]], "DATA ranges");
      assert.equal(r.wire.countByType("sent").ZERO, undefined, "no ZERO");
      assertPushShape(r.wire, SIZE);
      assert.deepEqual(r.destination.sortedWrites(), [[10 * BS, BS]], "writes");
      assert.deepEqual(r.destination.punches, [], "punches");
      assert.deepEqual(r.destination.setSizes, []);
      assertSourceUntouched(r);
    });
  });

  test("changes in a mostly-zero block and in the short last block: page-granular writes", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      await push(src, dst);
      pwrite(src, new Uint8Array([0xaa, 0xbb]), 96 * BS + 50); // block 96: data only in its first page
      pwrite(src, new Uint8Array([0xcc]), SIZE - 1);
      const r = await push(src, dst);
      assert.deepEqual(r.wire.ranges("sent", "REFINE"), [[96 * BS, BS], [128 * BS, 1234]], "REFINE ranges");
      assert.deepEqual(r.wire.ranges("sent", "PATCH"), [[96 * BS, BS]], "PATCH ranges");
      assert.deepEqual(r.wire.ranges("sent", "DATA"), [[128 * BS, 1234]], "DATA: every page of the last block differs");
      assert.equal(r.wire.countByType("sent").ZERO, undefined, "no ZERO");
      assert.equal(r.report.local.bytesSent, PAGE + 1234, "DATA bytes: the changed pages");
      assertPushShape(r.wire, SIZE);
      // Only the changed pages are written; the block's zero pages stay holes, untouched.
      assert.deepEqual(r.destination.sortedWrites(), [[96 * BS, PAGE], [128 * BS, 1234]], "writes");
      assert.deepEqual(r.destination.sortedPunches(), [], "punches");
      assertSourceUntouched(r);
    });
  });
});

describe("wire and disk: pull", () => {
  test("one changed page: REFINE, SUB_DIGESTS, one PATCH reply, one page-sized write on the client", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSource(src);
      const first = await recordedSync(src, dst, { mode: "pull", blockSize: BS, pool });
      assert.equal(fileHash(dst), fileHash(src));
      assertPullShape(first.wire, SIZE);
      assert.deepEqual(first.destination.setSizes, [SIZE], "the new file takes the source's size");
      assert.deepEqual(first.destination.punches, []);
      pwrite(src, patternBytes(4 * KiB, { seed: 78 }), 20 * BS + 60 * KiB);
      const r = await recordedSync(src, dst, { mode: "pull", blockSize: BS, pool });
      assert.equal(fileHash(dst), fileHash(src), "bytes");
      r.wire.assertSequence("sent", { first: ["OPEN"], then: ["READ_DIFF", "SUB_DIGESTS"], last: ["COMMIT"] });
      r.wire.assertSequence("received", { first: ["OPEN_OK"], then: ["REFINE", "PATCH", "RANGE_DONE"], last: ["COMMIT_OK"] });
      assertPullShape(r.wire, SIZE);
      assert.deepEqual(r.wire.ranges("received", "REFINE"), [[20 * BS, BS]], "REFINE");
      assert.deepEqual(r.wire.ranges("sent", "SUB_DIGESTS"), [[20 * BS, BS]], "SUB_DIGESTS");
      assert.deepEqual(r.wire.ranges("received", "PATCH"), [[20 * BS, BS]], "PATCH replies");
      assert.equal(r.wire.countByType("received").DATA, undefined, "no DATA");
      assert.equal(r.wire.countByType("received").ZERO, undefined, "no ZERO");
      assert.equal(r.report.local.bytesSent, PAGE, "DATA bytes: one page");
      assert.deepEqual(r.destination.sortedWrites(), [[20 * BS + 60 * KiB, PAGE]], "client writes");
      assert.deepEqual(r.destination.punches, [], "client punches");
      assert.deepEqual(r.destination.setSizes, []);
      assert.ok(r.destination.syncs >= 1, "the client fsyncs before COMMIT");
      assertSourceUntouched(r);
    });
  });
});

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

function blocks(offset: number, length: number, size: number): number[] {
  return range(Math.floor(offset / size), Math.ceil((offset + length) / size));
}

/** Distinct pages touched by the ranges, ascending. */
function pagesOf(list: readonly { offset: number; length: number }[]): number[] {
  const pages = new Set<number>();
  for (const r of list) for (const p of blocks(r.offset, r.length, PAGE)) pages.add(p);
  return [...pages].sort((a, b) => a - b);
}
