/**
 * Storage on regular files: extents, read/write, holes, size, locks, open errors.
 * Each behaviour runs twice where the platform matters: through FFI and through the
 * portable fallback (`{ ffi: false }`), checking what hit the disk (allocated bytes), not
 * only what reads back.
 */
import { nobodyUnavailableReason } from "./helpers/as-nobody.ts";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { platform } from "../src/platform/platform.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { openSource } from "../src/storage/open-source.ts";
import { lockFilePath } from "../src/storage/lock-file.ts";
import type { Extent } from "../src/storage/storage.ts";
import {
  allocatedBytesOf,
  fileHash,
  isZero,
  makeSparseFile,
  patternBytes,
  readRange,
  withTempDir,
} from "./helpers/sparse.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const T = { timeout: 30_000 };
const NO_FFI = platform.ffi ? false : `FFI unavailable: ${platform.ffiReason}`;
const MODES = [
  { name: "ffi", ffi: true, skip: NO_FFI },
  { name: "fallback", ffi: false, skip: false },
] as const;

function covered(extents: Extent[], offset: number): boolean {
  return extents.some((e) => offset >= e.offset && offset < e.offset + e.length);
}

function assertWellFormed(extents: Extent[], start: number, end: number): void {
  let prev = start;
  for (const e of extents) {
    assert.ok(e.length > 0, "empty extent");
    assert.ok(e.offset >= prev, "extents ascending and non-overlapping");
    prev = e.offset + e.length;
  }
  assert.ok(prev <= end, "extents clipped to the range");
}

for (const mode of MODES) {
  describe(`storage (${mode.name})`, { skip: mode.skip }, () => {
    test("data extents of a 200 GiB sparse file match what was written", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "big.img");
        const chunks = [
          { offset: 0, length: 64 * KiB },
          { offset: 3 * GiB, length: 1 * MiB },
          { offset: 100 * GiB + 4 * KiB, length: 8 * KiB },
          { offset: 200 * GiB - 4 * KiB, length: 4 * KiB },
        ];
        makeSparseFile(file, { size: 200 * GiB, chunks });
        await using src = await openSource(file, { ffi: mode.ffi });
        assert.equal(src.kind, "file");
        assert.equal(src.size, 200 * GiB);
        const t0 = performance.now();
        const extents = await src.dataExtents(0, src.size);
        const ms = performance.now() - t0;
        assertWellFormed(extents, 0, src.size);
        if (mode.ffi) {
          assert.deepEqual(extents, chunks, "SEEK_DATA/SEEK_HOLE report exactly the data");
          assert.ok(ms < 2000, `walking 200 GiB took ${ms.toFixed(1)} ms`);
          // Clipped to a range starting and ending inside data.
          const mid = await src.dataExtents(3 * GiB + 4 * KiB, 100 * GiB + 8 * KiB);
          assert.deepEqual(mid, [
            { offset: 3 * GiB + 4 * KiB, length: 1 * MiB - 4 * KiB },
            { offset: 100 * GiB + 4 * KiB, length: 4 * KiB },
          ]);
          assert.deepEqual(await src.dataExtents(10 * GiB, 20 * GiB), []);
        } else {
          assert.deepEqual(extents, [{ offset: 0, length: 200 * GiB }]);
        }
        for (const c of chunks) {
          assert.ok(covered(extents, c.offset) && covered(extents, c.offset + c.length - 1));
        }
        assert.deepEqual(
          await src.dataExtents(150 * GiB, 300 * GiB),
          mode.ffi
            ? [{ offset: 200 * GiB - 4 * KiB, length: 4 * KiB }]
            : [{ offset: 150 * GiB, length: 50 * GiB }],
          "clipped to the size",
        );
        assert.deepEqual(await src.dataExtents(300 * GiB, 400 * GiB), []);
      });
    });

    test("unaligned data is still covered by the extents", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "u.img");
        const chunks = [{ offset: 12345, length: 3 }, { offset: 5 * MiB + 1, length: 70000 }];
        makeSparseFile(file, { size: 10 * MiB + 17, chunks });
        await using src = await openSource(file, { ffi: mode.ffi });
        const extents = await src.dataExtents(0, src.size);
        assertWellFormed(extents, 0, src.size);
        for (const c of chunks) {
          for (let i = 0; i < c.length; i += 997) assert.ok(covered(extents, c.offset + i));
          assert.ok(covered(extents, c.offset + c.length - 1));
        }
      });
    });

    test("positional read and write round-trip; reads are short only at the end", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "rw.img");
        await using dst = await openDestination(file, { inplace: true, create: true, ffi: mode.ffi });
        await dst.setSize(3 * MiB + 100);
        const a = patternBytes(MiB + 3, { seed: 7 });
        await Promise.all([dst.write(a, 5), dst.write(patternBytes(99, { seed: 8 }), 3 * MiB)]);
        await dst.sync();
        const back = new Uint8Array(a.length);
        assert.equal(await dst.read(back, 5), a.length);
        assert.deepEqual(back, a);
        const tail = new Uint8Array(4096);
        assert.equal(await dst.read(tail, 3 * MiB), 100);
        assert.deepEqual(tail.subarray(0, 99), patternBytes(99, { seed: 8 }));
        assert.equal(tail[99], 0);
        assert.equal(await dst.read(tail, 4 * MiB), 0);
        assert.deepEqual(readRange(file, { offset: 5, length: a.length }), a);
      });
    });

    test("punchHole makes the range read as zeros, and a real hole with FFI", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "p.img");
        makeSparseFile(file, { size: 16 * MiB, chunks: [{ offset: 0, length: 16 * MiB }] });
        const before = allocatedBytesOf(file);
        assert.ok(before >= 16 * MiB);
        await using dst = await openDestination(file, { inplace: true, create: false, ffi: mode.ffi });
        const method = await dst.punchHole(4 * MiB, 8 * MiB);
        assert.equal(method, mode.ffi ? "punched" : "zeroed");
        // Unaligned edges: bytes around the hole keep their data.
        assert.equal(await dst.punchHole(1000, 10), mode.ffi ? "punched" : "zeroed");
        await dst.sync();
        assert.equal(dst.size, 16 * MiB);
        assert.equal(fs.statSync(file).size, 16 * MiB);
        assert.ok(isZero(readRange(file, { offset: 4 * MiB, length: 8 * MiB })));
        assert.ok(isZero(readRange(file, { offset: 1000, length: 10 })));
        const expect = patternBytes(MiB, { offset: 0 });
        const got = readRange(file, { offset: 0, length: 1010 });
        assert.deepEqual(got.subarray(0, 1000), expect.subarray(0, 1000));
        assert.notEqual(readRange(file, { offset: 1010, length: 1 })[0], 0);
        assert.notEqual(readRange(file, { offset: 4 * MiB - 1, length: 1 })[0], 0);
        assert.notEqual(readRange(file, { offset: 12 * MiB, length: 1 })[0], 0);
        const after = allocatedBytesOf(file);
        if (mode.ffi) {
          assert.ok(before - after >= 8 * MiB, `allocated ${before} → ${after}`);
          const ext = await dst.dataExtents(0, dst.size);
          assert.ok(!covered(ext, 6 * MiB), "the hole is no longer data");
        } else {
          assert.ok(after >= before - 64 * KiB, "zeros were written, not punched");
        }
        // Beyond the end: nothing to do, the size is kept.
        await dst.punchHole(15 * MiB, 10 * MiB);
        assert.equal(fs.statSync(file).size, 16 * MiB);
        assert.ok(isZero(readRange(file, { offset: 15 * MiB, length: MiB })));
      });
    });

    test("setSize grows sparse and shrinks", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "s.img");
        await using dst = await openDestination(file, { inplace: true, create: true, ffi: mode.ffi });
        assert.equal(dst.kind, "file");
        assert.equal(dst.size, 0);
        await dst.write(patternBytes(8 * KiB), 0);
        await dst.setSize(50 * GiB);
        assert.equal(dst.size, 50 * GiB);
        assert.equal(fs.statSync(file).size, 50 * GiB);
        assert.ok(allocatedBytesOf(file) < MiB, "growing allocates nothing");
        await dst.setSize(4 * KiB);
        assert.equal(dst.size, 4 * KiB);
        assert.equal(fs.statSync(file).size, 4 * KiB);
        assert.deepEqual(
          readRange(file, { offset: 0, length: 8 * KiB }),
          patternBytes(8 * KiB).subarray(0, 4 * KiB),
        );
        await assert.rejects(dst.setSize(-1), /Cannot resize/);
      });
    });

    test("a second writer gets the busy error until the first closes", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "l.img");
        const first = await openDestination(file, { inplace: true, create: true, ffi: mode.ffi });
        await assert.rejects(openDestination(file, { inplace: true, create: true, ffi: mode.ffi }), (e: Error) => {
          assert.equal(e.message, `Cannot lock ${file}: another ssync is writing it`);
          assert.equal((e as { code?: string }).code, "EBUSY");
          return true;
        });
        // A dry run takes no lock: it opens beside the writer, and holds no later writer out.
        await (await openDestination(file, { inplace: true, create: false, readOnly: true, ffi: mode.ffi }))[Symbol.asyncDispose]();
        // A reader of the source is never blocked by the writer's lock.
        await (await openSource(file, { ffi: mode.ffi }))[Symbol.asyncDispose]();
        await first[Symbol.asyncDispose]();
        await first[Symbol.asyncDispose](); // idempotent
        assert.ok(!fs.existsSync(lockFilePath(file)), "no lock file is left behind");
        // Created in place and never written: removed (a failed run leaves no empty file).
        assert.ok(!fs.existsSync(file), "the empty file first created is left behind");
        await using again = await openDestination(file, { inplace: true, create: true, ffi: mode.ffi });
        await again.write(new Uint8Array([1]), 0);
        await again[Symbol.asyncDispose]();
        assert.equal(fs.statSync(file).size, 1, "a file written to stays, uncommitted (in place: torn until a rerun)");
      });
    });

    test("operations after dispose and writes to read-only stores are refused", T, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, "c.img");
        makeSparseFile(file, { size: MiB, chunks: [{ offset: 0, length: 4 * KiB }] });
        const src = await openSource(file, { ffi: mode.ffi });
        await assert.rejects(src.write(new Uint8Array(1), 0), /Cannot write .*: opened read-only/);
        await assert.rejects(src.punchHole(0, 1), /opened read-only/);
        await assert.rejects(src.setSize(0), /opened read-only/);
        // Dispose waits for reads already started.
        const pending = src.read(new Uint8Array(4 * KiB), 0);
        const closing = src[Symbol.asyncDispose]();
        assert.equal(await pending, 4 * KiB);
        await closing;
        await assert.rejects(src.read(new Uint8Array(1), 0), /already closed/);
      });
    });
  });
}

describe("storage lock file (portable lock)", () => {
  test("a stale lock whose pid is dead is taken over", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "stale.img");
      const dead = spawnSync(process.execPath, ["--version"]).pid;
      assert.ok(dead);
      fs.writeFileSync(lockFilePath(file), `${dead}\n`);
      await using _dst = await openDestination(file, { inplace: true, create: true, ffi: false });
      assert.equal(fs.readFileSync(lockFilePath(file), "utf8").trim(), String(process.pid));
    });
  });

  test("a lock held by a live pid is respected", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "live.img");
      fs.writeFileSync(lockFilePath(file), "1\n"); // pid 1 is always alive
      await assert.rejects(
        openDestination(file, { inplace: true, create: true, ffi: false }),
        /another ssync is writing it/,
      );
      assert.equal(
        fs.readFileSync(lockFilePath(file), "utf8"),
        "1\n",
        "someone else's lock is kept",
      );
    });
  });
});

describe("opening errors", () => {
  test("a size beyond what the filesystem allows is EFBIG, on every runtime", T, async () => {
    await withTempDir(async (dir) => {
      const store = await openDestination(path.join(dir, "big.img"), { create: true });
      try {
        await assert.rejects(store.setSize(2 ** 52), (e: Error & { code?: string }) => e.code === "EFBIG" && /file too large/.test(e.message));
      } finally {
        await store[Symbol.asyncDispose]();
      }
    });
  });

  test("source: missing, directory, not a file", T, async () => {
    await withTempDir(async (dir) => {
      const missing = path.join(dir, "nope.img");
      await assert.rejects(openSource(missing), (e: Error) => {
        assert.equal(e.message, `Cannot open ${missing}: no such file`);
        assert.equal((e as { code?: string }).code, "ENOENT");
        return true;
      });
      await assert.rejects(openSource(dir), {
        message: `Cannot open ${dir}: is a directory`,
        code: "EISDIR",
      });
      await assert.rejects(
        openSource("/dev/null"),
        /Cannot open \/dev\/null: not a regular file or block device/,
      );
      const notDir = path.join(dir, "f");
      fs.writeFileSync(notDir, "x");
      await assert.rejects(openSource(path.join(notDir, "x")), { code: "ENOTDIR" });
    });
  });

  test("destination: directory, missing parent, missing without create", T, async () => {
    await withTempDir(async (dir) => {
      await assert.rejects(openDestination(dir, { create: true }), {
        message: `Cannot open ${dir}: is a directory`,
      });
      const parent = path.join(dir, "x");
      await assert.rejects(openDestination(path.join(parent, "a.img"), { create: true }), {
        message: `Cannot create ${path.join(parent, "a.img")}: directory ${parent} does not exist`,
        code: "ENOENT",
      });
      const f = path.join(dir, "a.img");
      await assert.rejects(openDestination(f, { create: false }), {
        message: `Cannot open ${f}: no such file`,
      });
      assert.ok(!fs.existsSync(f));
      await assert.rejects(
        openDestination("/dev/null", { create: true }),
        /not a regular file or block device/,
      );
    });
  });

  test("destination: create makes an empty private file; dry run creates nothing", T, async () => {
    await withTempDir(async (dir) => {
      const f = path.join(dir, "new.img");
      {
        await using dry = await openDestination(f, { create: true, readOnly: true });
        assert.equal(dry.size, 0);
        assert.deepEqual(await dry.dataExtents(0, 100), []);
        await assert.rejects(dry.write(new Uint8Array(1), 0), /read-only/);
      }
      assert.ok(!fs.existsSync(f), "dry run created nothing");
      {
        // A new file is written under a hidden name and renamed over its own at commit.
        await using dst = await openDestination(f, { create: true });
        assert.equal(dst.size, 0);
        await dst.write(new Uint8Array([1]), 0);
        assert.ok(!fs.existsSync(f), "not under its name before the commit");
        assert.equal(fs.statSync(path.join(dir, ".new.img.ssync-partial")).mode & 0o777, 0o600);
        await dst.commit();
      }
      assert.equal(fs.statSync(f).mode & 0o777, 0o600);
      assert.ok(!fs.existsSync(path.join(dir, ".new.img.ssync-partial")));
      makeSparseFile(f, { size: MiB, chunks: [{ offset: 0, length: 4096 }] });
      const h = fileHash(f);
      {
        await using dry = await openDestination(f, { create: true, readOnly: true });
        assert.equal(dry.size, MiB);
        await assert.rejects(dry.punchHole(0, 4096), /read-only/);
      }
      assert.equal(fileHash(f), h);
    });
  });

  test("permission denied, checked as an unprivileged user", {
    ...T,
    skip: nobodyUnavailableReason() || false,
  }, async () => {
    await withTempDir((dir) => {
      fs.chmodSync(dir, 0o755);
      const secret = path.join(dir, "secret.img");
      fs.writeFileSync(secret, "x", { mode: 0o600 });
      const script = path.join(dir, "probe.ts");
      const srcUrl = new URL("../src/storage/open-source.ts", import.meta.url).href;
      const dstUrl = new URL("../src/storage/open-destination.ts", import.meta.url).href;
      fs.writeFileSync(
        script,
        `
        import { openSource } from ${JSON.stringify(srcUrl)};
        import { openDestination } from ${JSON.stringify(dstUrl)};
        const out = [];
        for (const f of [() => openSource(process.argv.at(-1)), () => openDestination(process.argv.at(-1), { create: false })]) {
          try { await f(); out.push("opened"); } catch (e) { out.push(e.message + " / " + e.code); }
        }
        console.log(JSON.stringify(out));
      `,
      );
      fs.chmodSync(script, 0o644);
      const denoDir = path.join(dir, "deno-cache");
      fs.mkdirSync(denoDir, { mode: 0o777 });
      fs.chmodSync(denoDir, 0o777);
      // deno-lint-ignore no-explicit-any
      const isDeno = typeof (globalThis as any).Deno !== "undefined";
      const args = isDeno
        ? ["run", "-A", "--no-check", "--no-config", script, secret]
        : [script, secret];
      let out: string;
      try {
        out = execFileSync(process.execPath, args, {
          uid: 65534,
          gid: 65534,
          cwd: dir,
          env: { PATH: process.env.PATH ?? "", DENO_DIR: denoDir, HOME: dir, NO_COLOR: "1" },
          encoding: "utf8",
          timeout: 20_000,
        });
      } catch (e) {
        throw new Error(`child as nobody failed: ${(e as { stderr?: string }).stderr ?? e}`);
      }
      assert.deepEqual(JSON.parse(out), [
        `Cannot open ${secret}: permission denied / EACCES`,
        `Cannot open ${secret}: permission denied / EACCES`,
      ]);
    });
  });
});
