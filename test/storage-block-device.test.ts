/**
 * Storage on real block devices: loop devices over sparse backing files (Linux, root,
 * losetup). Skipped, with the reason, where loop devices cannot be set up. What hit the disk
 * is checked through the backing file (its allocated bytes and contents).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { libc } from "../src/platform/libc.ts";
import { platform } from "../src/platform/platform.ts";
import {
  blockDeviceSize,
  blockDeviceSizeByProbe,
  blockDeviceSizeFromSysfs,
} from "../src/storage/block-device-size.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { openSource } from "../src/storage/open-source.ts";
import { allocatedBytesOf, isZero, makeSparseFile, patternBytes, readRange, withTempDir } from "./helpers/sparse.ts";
import { loopDeviceUnavailableReason, withLoopDevice } from "./helpers/loop-device.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const T = { timeout: 60_000 };
const SKIP = loopDeviceUnavailableReason() || false;
const SIZE = 64 * MiB;

/** Runs `body` on a loop device over a fully written 64 MiB file; skips if losetup fails. */
async function withDevice(
  t: { skip(msg?: string): void },
  body: (device: string, backing: string) => Promise<void> | void,
): Promise<void> {
  await withTempDir(async (dir) => {
    const backing = path.join(dir, "backing.img");
    makeSparseFile(backing, { size: SIZE, chunks: [{ offset: 0, length: SIZE }] });
    const ran = await withLoopDevice(backing, (device) => body(device, backing));
    if (ran === null) t.skip("losetup -f --show failed (no loop devices in this sandbox?)");
  });
}

for (const mode of [{ name: "ffi", ffi: true }, { name: "fallback", ffi: false }]) {
  const skip = SKIP ||
    (mode.ffi && !platform.ffi ? `FFI unavailable: ${platform.ffiReason}` : false);
  describe(`block device (${mode.name})`, { skip }, () => {
    test("size, kind, extents and reads", T, async (t) => {
      await withDevice(t, async (device, backing) => {
        await using src = await openSource(device, { ffi: mode.ffi });
        assert.equal(src.kind, "block-device");
        assert.equal(src.size, SIZE);
        assert.deepEqual(await src.dataExtents(0, src.size * 2), [{ offset: 0, length: SIZE }]);
        const buf = new Uint8Array(MiB);
        assert.equal(await src.read(buf, 5 * MiB), MiB);
        assert.deepEqual(buf, readRange(backing, { offset: 5 * MiB, length: MiB }));
        assert.equal(await src.read(buf, SIZE - 100), 100, "short only at the end");
        assert.equal(await src.read(buf, SIZE), 0);
      });
    });

    test("punchHole zeroes (and unmaps with FFI), edges included; writes land", T, async (t) => {
      await withDevice(t, async (device, backing) => {
        const before = allocatedBytesOf(backing);
        {
          await using dst = await openDestination(device, { create: false, inplace: true, ffi: mode.ffi });
          assert.equal(dst.kind, "block-device");
          assert.equal(dst.size, SIZE);
          const method = await dst.punchHole(8 * MiB + 100, 16 * MiB);
          assert.equal(method, mode.ffi ? "punched" : "zeroed");
          await dst.write(patternBytes(3 * KiB, { seed: 3 }), 40 * MiB + 1);
          await dst.sync();
        }
        const holeStart = 8 * MiB + 100;
        assert.ok(isZero(readRange(backing, { offset: holeStart, length: 16 * MiB })));
        assert.notEqual(readRange(backing, { offset: holeStart - 1, length: 1 })[0], 0);
        assert.notEqual(readRange(backing, { offset: holeStart + 16 * MiB, length: 1 })[0], 0);
        assert.deepEqual(
          readRange(backing, { offset: 40 * MiB + 1, length: 3 * KiB }),
          patternBytes(3 * KiB, { seed: 3 }),
        );
        const after = allocatedBytesOf(backing);
        if (mode.ffi) {
          assert.ok(before - after >= 15 * MiB, `backing file allocation ${before} → ${after}`);
        }
      });
    });

    test("setSize refuses a source larger than the device; smaller is a no-op", T, async (t) => {
      await withDevice(t, async (device) => {
        await using dst = await openDestination(device, { create: true, ffi: mode.ffi });
        await assert.rejects(dst.setSize(SIZE + 512), {
          message: `${device} is a block device of ${SIZE} bytes, smaller than the source (${
            SIZE + 512
          } bytes)`,
        });
        await dst.setSize(SIZE - 4096);
        await dst.setSize(SIZE);
        assert.equal(dst.size, SIZE);
      });
    });

    test("a second writer is refused while the first holds the device", T, async (t) => {
      await withDevice(t, async (device) => {
        const first = await openDestination(device, { create: false, ffi: mode.ffi });
        await assert.rejects(
          openDestination(device, { create: false, ffi: mode.ffi }),
          (e: Error) => {
            assert.match(
              e.message,
              new RegExp(`^Cannot lock ${device}: another ssync is writing it`),
            );
            assert.equal((e as { code?: string }).code, "EBUSY");
            return true;
          },
        );
        await (await openSource(device, { ffi: mode.ffi }))[Symbol.asyncDispose]();
        await first[Symbol.asyncDispose]();
        await (await openDestination(device, { create: false, ffi: mode.ffi }))
          [Symbol.asyncDispose]();
      });
    });
  });
}

describe("block device size and zeroing primitives", { skip: SKIP }, () => {
  test("ioctl, sysfs and probe agree", T, async (t) => {
    await withDevice(t, (device) => {
      const fd = fs.openSync(device, "r");
      try {
        const rdev = fs.fstatSync(fd, { bigint: true }).rdev;
        assert.equal(blockDeviceSizeFromSysfs(rdev), SIZE);
        assert.equal(blockDeviceSizeByProbe(fd), SIZE);
        assert.equal(blockDeviceSize(fd, { libc: null, rdev }), SIZE);
        if (libc) {
          assert.equal(libc.blockDeviceSize(fd), SIZE);
          assert.equal(blockDeviceSize(fd, { libc, rdev }), SIZE);
        }
      } finally {
        fs.closeSync(fd);
      }
    });
  });

  test(
    "BLKZEROOUT zeroes an aligned range",
    { ...T, skip: platform.ffi ? false : "no FFI" },
    async (t) => {
      await withDevice(t, (device, backing) => {
        const fd = fs.openSync(device, "r+");
        try {
          assert.equal(libc!.blockZeroOut(fd, { offset: 4 * MiB, length: 2 * MiB }), 0);
          assert.equal(
            libc!.blockZeroOut(fd, { offset: 1, length: 512 }),
            -22,
            "EINVAL when unaligned",
          );
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        assert.ok(isZero(readRange(backing, { offset: 4 * MiB, length: 2 * MiB })));
        assert.notEqual(readRange(backing, { offset: 6 * MiB, length: 1 })[0], 0);
      });
    },
  );
});
