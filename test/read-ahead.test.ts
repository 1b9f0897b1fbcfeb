/**
 * Read-ahead (engine/read-ahead.ts): after advance(offset) the kernel is reading the data
 * extents after `offset` — at most LEAD_BYTES of them, never the holes — so a cold disk has
 * requests in flight while the workers hash. Checked with fincore(1): which of the file's
 * pages are in the page cache, after the file's own cache was dropped (POSIX_FADV_DONTNEED).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { LEAD_BYTES, ReadAhead } from "../src/engine/read-ahead.ts";
import { libc } from "../src/platform/libc.ts";
import { openSource } from "../src/storage/open-source.ts";
import { makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 * 1024;
const POSIX_FADV_DONTNEED = 4;
const fincore = spawnSync("fincore", ["--version"]).status === 0;
const skip = libc === null ? "needs FFI (Deno, or Node 26 with FFI)" : !fincore ? "needs fincore (util-linux)" : false;

/** Bytes of `file` resident in the page cache. */
function resident(file: string): number {
  const r = spawnSync("fincore", ["-b", "-n", "-r", "-o", "RES", file], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return Number(r.stdout.trim());
}

function dropCache(file: string): void {
  const fd = fs.openSync(file, "r");
  try {
    fs.fdatasyncSync(fd);
    assert.equal(libc!.fadvise(fd, POSIX_FADV_DONTNEED), 0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Waits (bounded) until the kernel finished the reads it was asked to start. */
async function residentSettled(file: string): Promise<number> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const now = resident(file);
    if (now === last) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last;
}

describe("read-ahead", { skip, timeout: 60_000 }, () => {
  test("reads the data extents ahead, not the holes, at most LEAD_BYTES of them", { timeout: 30_000 }, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "src.img");
      // 4 extents of 8 MiB with 56 MiB holes between, then 96 MiB of data (more than the lead).
      const chunks = [0, 1, 2, 3].map((i) => ({ offset: i * 64 * MiB, length: 8 * MiB }));
      chunks.push({ offset: 256 * MiB, length: 96 * MiB });
      makeSparseFile(file, { size: 512 * MiB, chunks });
      dropCache(file);
      assert.equal(resident(file), 0, "the file's cache was dropped");
      await using store = await openSource(file);
      const ahead = new ReadAhead(store);
      ahead.advance(0);
      await ahead.settled();
      ahead.adviseNow();
      const first = await residentSettled(file);
      // The 32 MiB of the four small extents and the start of the big one: the lead, not more.
      assert.ok(first >= LEAD_BYTES - 4 * MiB, `${first / MiB} MiB resident after advance(0)`);
      assert.ok(first <= LEAD_BYTES + 8 * MiB, `${first / MiB} MiB resident: more than the lead`);
      // Holes were not read: nothing between the small extents is resident... (a hole has no pages)
      // ...and the reader moving on advises the rest.
      ahead.advance(300 * MiB);
      await ahead.settled();
      ahead.adviseNow();
      const later = await residentSettled(file);
      assert.ok(later >= first + 24 * MiB, `${later / MiB} MiB resident after advance(300 MiB)`);
    });
  });

  test("a reader going through 2,000 small extents: the planning lists each extent once, not once per round", { timeout: 30_000 }, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "frag.img");
      // Dense (80% data): a round's window holds more data than its budget, so the next round
      // starts inside what this one listed.
      const chunks = Array.from({ length: 2000 }, (_, i) => ({ offset: i * 160 * 1024, length: 128 * 1024 }));
      makeSparseFile(file, { size: 320 * MiB, chunks });
      await using store = await openSource(file);
      let listed = 0;
      // The store as ReadAhead sees it, counting the extents each dataExtents call returns.
      const counting = new Proxy(store, {
        get(target, key) {
          if (key === "dataExtents") {
            return async (start: number, end: number) => {
              const extents = await target.dataExtents(start, end);
              listed += extents.length;
              return extents;
            };
          }
          const v = Reflect.get(target, key, target);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const ahead = new ReadAhead(counting);
      for (let at = 0; at < 320 * MiB; at += MiB) {
        ahead.advance(at);
        await ahead.settled();
        ahead.take();
      }
      // Listing the rest of the file on every round (one per 8 MiB of data read) was ~20,000.
      // Rounds listing again what an earlier round listed gave 3,182 here (an extent a window's
      // end cuts is listed as two halves).
      assert.ok(listed <= 2100, `${listed} extents listed for 2000`);
      assert.ok(listed >= 2000, `${listed} extents listed: every one at least once`);
    });
  });

  test("without FFI it gives no advice and reads nothing", { timeout: 30_000 }, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "src.img");
      makeSparseFile(file, { size: 64 * MiB, chunks: [{ offset: 0, length: 16 * MiB }] });
      dropCache(file);
      await using store = await openSource(file);
      const ahead = new ReadAhead(store, { libc: null });
      ahead.advance(0);
      await ahead.settled();
      ahead.adviseNow();
      assert.equal(await residentSettled(file), 0);
    });
  });
});

describe("read-ahead through a job", { skip, timeout: 60_000 }, () => {
  test("a worker gives the advice its job carries before its own read", { timeout: 30_000 }, async () => {
    const { WorkerPool } = await import("../src/engine/worker-pool.ts");
    await withTempDir(async (dir) => {
      const file = path.join(dir, "src.img");
      makeSparseFile(file, { size: 64 * MiB, chunks: [{ offset: 0, length: 1 * MiB }, { offset: 32 * MiB, length: 16 * MiB }] });
      dropCache(file);
      await using pool = new WorkerPool({ size: 1 });
      await using store = await openSource(file);
      const advise = [{ offset: 32 * MiB, length: 8 * MiB }, { offset: 40 * MiB, length: 8 * MiB }];
      await store.lend((f) => pool.digest({ file: f, offset: 0, length: MiB, blockSize: 65536, hash: "poly1305", key: new Uint8Array(32), advise }));
      const now = await residentSettled(file);
      assert.ok(now >= 17 * MiB - 256 * 1024, `${now / MiB} MiB resident: the job's own MiB and the 16 MiB it advised`);
    });
  });
});
