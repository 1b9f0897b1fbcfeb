/**
 * Runtime-specific code: the libc bindings' errno handling, and
 * zstd on both backends (native zlib and wasm), including frames crossing between them
 * and the decompressed-size cap.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { errnoName, libc, libcStatus } from "../src/platform/libc.ts";
import { platform } from "../src/platform/platform.ts";
import {
  compress,
  compressBound,
  decompress,
  frameContentSize,
  initZstd,
  type ZstdBackend,
  zstdStatus,
} from "../src/platform/zstd.ts";
import { patternBytes, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 30_000 };

describe("platform", () => {
  // Without this, a runtime that silently lost FFI would skip every FFI test below and pass.
  test("the libc bindings load on Linux when FFI is permitted", T, () => {
    // deno-lint-ignore no-explicit-any
    const deno = (globalThis as any).Deno;
    const permitted = deno ? deno.permissions.querySync({ name: "ffi" }).state === "granted" : true;
    if (process.platform !== "linux" || process.env.SSYNC_NO_FFI === "1" || !permitted) return;
    assert.ok(libc !== null, `FFI expected on Linux: ${libcStatus.reason}`);
  });

  test("errno names", T, () => {
    assert.equal(errnoName(2), "ENOENT");
    assert.equal(errnoName(-6), "ENXIO");
    assert.equal(errnoName(95), "EOPNOTSUPP");
  });
});

describe("libc bindings", { skip: platform.ffi ? false : `no FFI: ${platform.ffiReason}` }, () => {
  test(
    "failures return -errno; SEEK_DATA/SEEK_HOLE; flock conflicts between descriptors",
    T,
    async () => {
      const l = libc!;
      assert.equal(l.seekData(-1, 0), -9, "EBADF");
      await withTempDir((dir) => {
        const file = path.join(dir, "f");
        const fd = fs.openSync(file, "w+");
        const fd2 = fs.openSync(file, "r");
        try {
          fs.ftruncateSync(fd, 1 << 30);
          fs.writeSync(fd, new Uint8Array(4096).fill(1), 0, 4096, 1 << 20);
          assert.equal(l.seekData(fd, 0), 1 << 20);
          assert.equal(l.seekHole(fd, 1 << 20), (1 << 20) + 4096);
          assert.equal(l.seekData(fd, (1 << 20) + 4096), -6, "ENXIO after the last data");
          assert.equal(l.seekHole(fd, 2 ** 40), -6, "ENXIO past the end");
          assert.equal(l.blockDeviceSize(fd), -25, "ENOTTY on a regular file");
          assert.equal(l.flock(fd, 2 | 4), 0);
          assert.equal(l.flock(fd2, 2 | 4), -11, "EWOULDBLOCK: held through another descriptor");
          assert.equal(l.flock(fd, 8), 0, "LOCK_UN");
          assert.equal(l.flock(fd2, 1 | 4), 0);
          assert.equal(l.punchHole(fd, { offset: 1 << 20, length: 4096 }), 0);
          assert.equal(l.seekData(fd, 0), -6, "no data left");
          assert.equal(l.fadvise(fd, 2), 0);
          const own = l.open(file, 0);
          assert.ok(own >= 0);
          assert.equal(l.close(own), 0);
          assert.equal(l.open(path.join(dir, "missing"), 0), -2);
          const stat = fs.fstatSync(fd, { bigint: true });
          const times = l.fileTimes(fd);
          assert.ok(typeof times !== "number", `statx failed: ${times}`);
          assert.deepEqual([times.dev, times.ino, times.size], [stat.dev, stat.ino, stat.size], "statx's identity is stat's");
          const dev = fs.statSync("/dev/null", { bigint: true });
          const nullFd = fs.openSync("/dev/null", "r");
          try {
            const t = l.fileTimes(nullFd);
            assert.ok(typeof t !== "number" && t.dev === dev.dev && t.ino === dev.ino, "on devtmpfs too");
          } finally {
            fs.closeSync(nullFd);
          }
        } finally {
          fs.closeSync(fd);
          fs.closeSync(fd2);
        }
      });
    },
  );
});

function sample(size: number): Uint8Array {
  // Compressible but not trivial: runs of zeros, repeated text and noise.
  const out = new Uint8Array(size);
  const noise = patternBytes(size, { seed: 5 });
  for (let i = 0; i < size; i++) {
    const k = (i >> 12) % 3;
    out[i] = k === 0 ? 0 : k === 1 ? 97 + (i % 23) : noise[i];
  }
  return out;
}

/**
 * The same frame without Frame_Content_Size: the header becomes a non-single-segment
 * header with a 1 MiB window, as streaming compressors write it.
 */
function stripContentSize(frame: Uint8Array): Uint8Array {
  const fhd = frame[4];
  const fcsFlag = fhd >> 6;
  const single = (fhd >> 5) & 1;
  const dictBytes = [0, 1, 2, 4][fhd & 3];
  const fcsBytes = fcsFlag === 0 ? single : 1 << fcsFlag;
  const headerEnd = 5 + (single ? 0 : 1) + dictBytes + fcsBytes;
  const newFhd = fhd & 0b00011111 & ~0b00100000;
  const dict = frame.subarray(5 + (single ? 0 : 1), 5 + (single ? 0 : 1) + dictBytes);
  const head = [0x28, 0xb5, 0x2f, 0xfd, newFhd, 0x50, ...dict]; // window log 20
  const out = new Uint8Array(head.length + frame.length - headerEnd);
  out.set(head);
  out.set(frame.subarray(headerEnd), head.length);
  return out;
}

describe("zstd", () => {
  test("a frame is a buffer of its own within compressBound, whatever the input", T, async () => {
    await initZstd({ wasm: true });
    const random = new Uint8Array(65536);
    for (let i = 0; i < random.length; i++) random[i] = (i * 2654435761) >>> 24 ^ (i >> 3);
    crypto.getRandomValues(random.subarray(0, 32768));
    for (const backend of ["native", "wasm"] as ZstdBackend[]) {
      if (backend === "native" && !zstdStatus.nativeAvailable) continue;
      for (const data of [random, new Uint8Array(65536), random.subarray(0, 4096), new Uint8Array(1)]) {
        const frame = compress(data, 1, { backend });
        assert.ok(frame.length <= compressBound(data.length), `${backend}: ${frame.length} > bound ${compressBound(data.length)}`);
        assert.equal(frame.byteOffset, 0);
        assert.equal(frame.buffer.byteLength, frame.length, `${backend}: the frame spans its buffer (releasable once sent)`);
        assert.deepEqual(decompress(frame, data.length, { backend }), data);
      }
    }
    assert.equal(compressBound(65536), 65536 + 256 + 32);
    assert.equal(compressBound(1 << 20), (1 << 20) + 4096);
  });

  const backends: ZstdBackend[] = zstdStatus.nativeAvailable ? ["native", "wasm"] : ["wasm"];

  test("frames cross between backends in both directions", T, async () => {
    await initZstd({ wasm: true });
    for (const size of [0, 1, 1000, 128 * 1024, 1 << 20]) {
      const data = sample(size);
      for (const from of backends) {
        const frame = compress(data, 3, { backend: from });
        assert.equal(frameContentSize(frame), size, `${from} writes the content size`);
        if (size > 1000) assert.ok(frame.length < size, "compressible data shrinks");
        for (const to of backends) {
          assert.deepEqual(
            decompress(frame, size, { backend: to }),
            data,
            `${from} → ${to}, ${size} B`,
          );
        }
      }
    }
  });

  test("decompress refuses output above maxSize, with and without a size header", T, async () => {
    await initZstd({ wasm: true });
    const data = sample(256 * 1024);
    for (const from of backends) {
      const frame = compress(data, 1, { backend: from });
      const bare = stripContentSize(frame);
      assert.equal(frameContentSize(bare), null);
      for (const to of backends) {
        assert.throws(() => decompress(frame, data.length - 1, { backend: to }), RangeError);
        assert.throws(() => decompress(bare, data.length - 1, { backend: to }), RangeError);
        assert.throws(() => decompress(bare, 1000, { backend: to }), /more than 1000 bytes/);
        assert.deepEqual(
          decompress(bare, data.length, { backend: to }),
          data,
          `${from} → ${to} bare`,
        );
        assert.deepEqual(decompress(bare, 4 << 20, { backend: to }), data);
      }
    }
  });

  test("corrupt or foreign input is an error, not a crash", T, async () => {
    await initZstd({ wasm: true });
    for (const to of backends) {
      assert.throws(
        () => decompress(new Uint8Array([1, 2, 3, 4, 5, 6]), 100, { backend: to }),
        /not a zstd frame/,
      );
      const data = sample(64 * 1024);
      const frame = compress(data, 1, { backend: to });
      for (const cut of [1, 7, 100, frame.length >> 1]) {
        assert.throws(
          () => decompress(frame.slice(0, frame.length - cut), 64 * 1024, { backend: to }),
          /truncated/,
        );
      }
      assert.throws(() =>
        decompress(frame.slice(0, frame.length >> 1), 64 * 1024, { backend: to })
      );
      const flipped = frame.slice();
      flipped[flipped.length >> 1] ^= 0xff;
      try {
        assert.notDeepEqual(decompress(flipped, 64 * 1024, { backend: to }), data);
      } catch {
        // an error is the expected outcome
      }
      assert.throws(
        () => decompress(new Uint8Array([...frame, 1, 2, 3, 4, 5, 6]), 1 << 20, { backend: to }),
        /not a zstd frame/,
      );
      // Concatenated frames are one zstd stream; the cap counts all of them.
      const twice = new Uint8Array([...frame, ...frame]);
      assert.deepEqual(
        decompress(twice, 128 * 1024, { backend: to }),
        new Uint8Array([...data, ...data]),
      );
      assert.throws(() => decompress(twice, 128 * 1024 - 1, { backend: to }), RangeError);
      assert.throws(
        () =>
          decompress(new Uint8Array([...frame, ...stripContentSize(frame)]), 100_000, {
            backend: to,
          }),
        RangeError,
      );
    }
  });

  test("the default backend follows SSYNC_NO_NATIVE_ZSTD", T, async () => {
    await initZstd();
    const expectNative = zstdStatus.nativeAvailable && process.env.SSYNC_NO_NATIVE_ZSTD !== "1";
    assert.equal(zstdStatus.native, expectNative);
    const data = sample(10_000);
    assert.deepEqual(decompress(compress(data, 1), data.length), data);
  });
});
