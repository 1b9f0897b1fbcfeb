/**
 * End-to-end local sync (`ssync sync`): the client and server sessions over the in-memory
 * pair, real sparse files, real workers. Checks bytes, allocation and the counters.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { runSyncCommand } from "../src/cli/sync-command.ts";
import { verifyIdentical } from "../src/engine/verify.ts";
import { platform } from "../src/platform/platform.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, readRange, withTempDir } from "./helpers/sparse.ts";
import { loopDeviceUnavailableReason, withLoopDevice } from "./helpers/loop-device.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const BS = 64 * KiB;

type DestState = "absent" | "identical" | "different" | "larger" | "smaller";

function prepareDest(dst: string, src: string, state: DestState, size: number): void {
  switch (state) {
    case "absent":
      return;
    case "identical":
      fs.copyFileSync(src, dst);
      return;
    case "different":
      makeSparseFile(dst, { size, chunks: size > 0 ? [{ offset: 0, length: Math.min(size, 3 * BS), seed: 99 }] : [] });
      return;
    case "larger":
      makeSparseFile(dst, { size: size + 5 * BS + 7, chunks: [{ offset: size, length: 5 * BS, seed: 7 }] });
      return;
    case "smaller":
      makeSparseFile(dst, { size: Math.floor(size / 3), chunks: size >= 3 ? [{ offset: 0, length: Math.floor(size / 3), seed: 5 }] : [] });
      return;
  }
}

/**
 * Same size and bytes; with real holes (FFI), allocated ≤ the source's + one block.
 * Files past 256 MiB are compared by verifyIdentical (extent-aware, reads no common hole).
 */
async function assertSynced(src: string, dst: string, options: { sparse?: boolean } = {}): Promise<void> {
  assert.equal(fs.statSync(dst).size, fs.statSync(src).size, "size");
  if (fs.statSync(src).size > 256 * MiB) await verifyIdentical(src, dst);
  else assert.equal(fileHash(dst), fileHash(src), "bytes");
  if (options.sparse ?? platform.ffi) {
    assert.ok(allocatedBytesOf(dst) <= allocatedBytesOf(src) + BS, `allocated ${allocatedBytesOf(dst)} > ${allocatedBytesOf(src)} + one block`);
  }
}

const SIZES = [0, 1, BS - 1, BS, BS + 1, 3 * BS + 123];
const STATES: DestState[] = ["absent", "identical", "different", "larger", "smaller"];

for (const ffi of [true, false]) {
  describe(`byte identity and sparseness (${ffi ? "FFI" : "portable fallback"})`, { timeout: 120_000 }, () => {
    for (const size of SIZES) {
      test(`size ${size}, every destination state`, async () => {
        await withTempDir(async (dir) => {
          const src = path.join(dir, "src.img");
          makeSparseFile(src, { size, chunks: size > 0 ? [{ offset: 0, length: Math.min(size, BS + 1) }] : [] });
          for (const state of STATES) {
            const dst = path.join(dir, `dst-${state}.img`);
            prepareDest(dst, src, state, size);
            // A larger destination holds data past the source's end: cut only with --allow-shrink.
            const s = await runSyncCommand(src, dst, { allowShrink: state === "larger" }, { ffi });
            // Without FFI a dense destination's zeros cannot become holes again.
            // Without FFI, holes cannot be punched either: only a new destination stays sparse.
            await assertSynced(src, dst, { sparse: platform.ffi && (ffi || state === "absent") });
            if (state === "identical") {
              assert.equal(s.bytesWritten, 0, "identical destination: nothing written");
              assert.equal(s.blocksSent, 0);
            }
          }
        });
      });
    }
  });
}

describe("multi-GiB sparse image with scattered extents", { timeout: 120_000 }, () => {
  const size = 3 * GiB + 12345;
  const chunks = Array.from({ length: 24 }, (_, i) => ({
    offset: Math.floor((i * 0.97 * size) / 24 / 4096) * 4096 + (i % 3) * 777,
    length: (i % 4 + 1) * 100 * KiB + i,
    seed: i,
  }));
  for (const state of STATES) {
    test(`destination ${state}`, async () => {
      await withTempDir(async (dir) => {
        const src = path.join(dir, "src.img");
        const dst = path.join(dir, "dst.img");
        makeSparseFile(src, { size, chunks });
        if (state === "different") {
          makeSparseFile(dst, { size, chunks: chunks.map((c, i) => ({ ...c, seed: i + 1000, offset: c.offset + 3 * MiB })) });
        } else if (state === "identical") {
          await runSyncCommand(src, dst, {}); // as a previous run left it
        } else {
          prepareDest(dst, src, state, size);
        }
        const s = await runSyncCommand(src, dst, { allowShrink: state === "larger" });
        await assertSynced(src, dst);
        const data = chunks.reduce((n, c) => n + c.length, 0);
        if (platform.ffi) assert.ok(s.sourceBytesRead <= data + chunks.length * 2 * BS, `source read ${s.sourceBytesRead} for ${data} of data`);
      });
    });
  }
});

describe("sparseness", { timeout: 60_000 }, () => {
  test("a data block that became zeros in the source becomes a hole in the destination", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 64 * MiB, chunks: [{ offset: 0, length: 4 * MiB }, { offset: 32 * MiB, length: 4 * MiB }] });
      await runSyncCommand(src, dst, {});
      const before = allocatedBytesOf(dst);
      // Zero 1 MiB (16 blocks) in the source by writing zeros: allocated zeros, not a hole.
      const fd = fs.openSync(src, "r+");
      fs.writeSync(fd, new Uint8Array(MiB), 0, MiB, 33 * MiB);
      fs.closeSync(fd);
      const s = await runSyncCommand(src, dst, {});
      await assertSynced(src, dst);
      assert.equal(s.zeroBytesSent, MiB, "the zeroed megabyte went as a ZERO range");
      assert.equal(s.bytesWritten, 0);
      if (platform.ffi) {
        assert.equal(s.holeBytesPunched, MiB);
        assert.ok(allocatedBytesOf(dst) <= before - MiB, `destination still allocates the zeroed range (${before} → ${allocatedBytesOf(dst)})`);
        assert.ok(allocatedBytesOf(dst) < allocatedBytesOf(src), "destination smaller than the source's allocated zeros");
      }
    });
  });

  test("zero blocks arriving in DATA are punched, never written", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      // Allocated zeros in the source: read (they are data extents) but never written.
      makeSparseFile(src, { size: 8 * MiB, chunks: [{ offset: 0, length: 8 * MiB, fill: 0 }, { offset: 4 * MiB, length: 10, fill: 7 }] });
      const s = await runSyncCommand(src, dst, {});
      await assertSynced(src, dst);
      assert.equal(s.bytesWritten, 4096, "only the one non-zero page is written");
    });
  });
});

describe("only changed blocks are written", { timeout: 180_000 }, () => {
  test("1% of blocks changed in a 1 GiB image, then an identical rerun", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: GiB, chunks: [{ offset: 0, length: GiB, fill: "random" }] });
      const first = await runSyncCommand(src, dst, {});
      assert.equal(first.bytesWritten, GiB);
      const blocks = GiB / BS;
      const changed = Math.floor(blocks / 100);
      const fd = fs.openSync(src, "r+");
      const picked = new Set<number>();
      for (let i = 0; picked.size < changed; i++) picked.add((i * 7919 + 13) % blocks);
      for (const b of picked) fs.writeSync(fd, new Uint8Array([b & 255, 1, 2, 3]), 0, 4, b * BS + 100);
      fs.closeSync(fd);
      const second = await runSyncCommand(src, dst, {});
      await assertSynced(src, dst);
      assert.ok(second.bytesWritten <= changed * BS + BS, `wrote ${second.bytesWritten} for ${changed} changed blocks`);
      assert.equal(second.blocksSent, changed);
      const third = await runSyncCommand(src, dst, {});
      assert.equal(third.bytesWritten, 0);
      assert.equal(third.blocksSent, 0);
      assert.equal(third.holeBytesPunched, 0);
    });
  });
});

describe("holes are not read", { timeout: 60_000 }, () => {
  test("300 GiB apparent with 5 MiB of data: seconds, and reads about the data size per side", async (t) => {
    if (!platform.ffi) return t.skip(`needs SEEK_DATA: ${platform.ffiReason}`);
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      const size = 300 * GiB;
      const chunks = [0, 1, 2, 3, 4].map((i) => ({ offset: i * 60 * GiB + 123 * MiB, length: MiB }));
      makeSparseFile(src, { size, chunks });
      const started = performance.now();
      const first = await runSyncCommand(src, dst, {});
      const second = await runSyncCommand(src, dst, {});
      const seconds = (performance.now() - started) / 1000;
      await assertSynced(src, dst);
      assert.ok(seconds < 30, `took ${seconds} s`);
      for (const s of [first, second]) {
        assert.ok(s.sourceBytesRead <= 5 * MiB + 5 * 2 * BS, `source read ${s.sourceBytesRead}`);
        assert.ok(s.sourceHoleBytesSkipped >= size - 6 * MiB);
      }
      assert.equal(first.destinationBytesRead, 0, "a new destination is all hole");
      assert.ok(second.destinationBytesRead <= 5 * MiB + 5 * 2 * BS, `destination read ${second.destinationBytesRead}`);
    });
  });
});

describe("hash algorithms and block sizes", { timeout: 60_000 }, () => {
  for (const [hash, blockSize] of [["hmac-sha256", "4K"], ["blake3", "1M"], ["xxh128", "128K"]] as const) {
    test(`${hash}, --block-size ${blockSize}`, async () => {
      await withTempDir(async (dir) => {
        const src = path.join(dir, "src.img");
        const dst = path.join(dir, "dst.img");
        makeSparseFile(src, { size: 9 * MiB + 5, chunks: [{ offset: MiB + 17, length: 2 * MiB }] });
        makeSparseFile(dst, { size: 12 * MiB, chunks: [{ offset: 0, length: 5 * MiB, seed: 4 }] });
        const s = await runSyncCommand(src, dst, { hash, blockSize });
        assert.equal(s.hash, hash);
        await assertSynced(src, dst);
      });
    });
  }
});

describe("block devices (loop devices)", { timeout: 120_000 }, () => {
  test("file → block device, then block device → sparse file", async (t) => {
    const why = loopDeviceUnavailableReason();
    if (why) return t.skip(why);
    await withTempDir(async (dir) => {
      const backing = path.join(dir, "backing.img");
      makeSparseFile(backing, { size: 64 * MiB, chunks: [{ offset: 0, length: 64 * MiB, seed: 11 }] });
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 40 * MiB, chunks: [{ offset: 3 * MiB + 5, length: 2 * MiB }, { offset: 39 * MiB, length: MiB }] });
      const back = path.join(dir, "back.img");
      const ran = await withLoopDevice(backing, async (dev) => {
        const s = await runSyncCommand(src, dev, {});
        assert.equal(s.size, 40 * MiB);
        assert.ok(s.holeBytesPunched >= 30 * MiB, "stale device data became zeros");
        assert.deepEqual(readRange(dev, { offset: 0, length: 40 * MiB }), readRange(src, { offset: 0, length: 40 * MiB }));
        assert.deepEqual(readRange(dev, { offset: 40 * MiB, length: MiB }), readRange(backing, { offset: 40 * MiB, length: MiB }), "past the source's size the device is left alone");
        const again = await runSyncCommand(src, dev, {});
        assert.equal(again.bytesWritten, 0);
        const pulled = await runSyncCommand(dev, back, {});
        assert.equal(pulled.size, 64 * MiB);
        assert.equal(fileHash(back), fileHash(dev));
        return true;
      });
      if (ran === null) return t.skip("losetup failed here");
      if (platform.ffi) assert.ok(allocatedBytesOf(back) < 30 * MiB, `zero blocks read from the device became holes (${allocatedBytesOf(back)})`);
    });
  });
});
