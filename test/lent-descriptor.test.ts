/**
 * Scan jobs read through the descriptor their store lends, never through a name: after the
 * store is open, its path is replaced by a file with other bytes, and every job (in a worker
 * and in-process) still digests the bytes of the file the store opened. A descriptor whose
 * number now names another file is refused.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createBlockHasher, digestBlocks } from "../src/engine/block-hash.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { readLent } from "../src/storage/read-lent.ts";
import { openSource } from "../src/storage/open-source.ts";
import { makeSparseFile, patternBytes, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 30_000 };
const MiB = 1 << 20;
const BS = 65536;
const KEY = new Uint8Array(32).fill(5);

async function expectedDigests(bytes: Uint8Array, offset: number): Promise<Uint8Array> {
  return digestBlocks(await createBlockHasher("hmac-sha256", KEY), bytes, BS, offset / BS);
}

describe("lent descriptors", () => {
  const pools: WorkerPool[] = [];
  before(() => {
    pools.push(new WorkerPool({ size: 1 }), new WorkerPool({ size: 0 }));
  });
  after(async () => {
    for (const p of pools) await p[Symbol.asyncDispose]();
  });

  test("a job digests the file the store opened, though its name now holds another file", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "a.img");
      makeSparseFile(file, { size: 2 * MiB, chunks: [{ offset: 0, length: 2 * MiB, seed: 1 }] });
      const store = await openSource(file);
      try {
        fs.renameSync(file, path.join(dir, "moved.img"));
        makeSparseFile(file, { size: 2 * MiB, chunks: [{ offset: 0, length: 2 * MiB, seed: 2 }] });
        const want = await expectedDigests(patternBytes(MiB, { offset: MiB, seed: 1 }), MiB);
        const other = await expectedDigests(patternBytes(MiB, { offset: MiB, seed: 2 }), MiB);
        assert.notDeepEqual(want, other);
        for (const pool of pools) {
          const r = await store.lend((lent) =>
            pool.digest({ file: lent, offset: MiB, length: MiB, blockSize: BS, hash: "hmac-sha256", key: KEY })
          );
          assert.equal(r.bytesRead, MiB, `pool of ${pool.size}`);
          assert.deepEqual(r.digests, want, `pool of ${pool.size} read the opened file`);
        }
      } finally {
        await store[Symbol.asyncDispose]();
      }
    });
  });

  test("a lent file whose descriptor names another inode is refused", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "a.img");
      makeSparseFile(file, { size: MiB, chunks: [{ offset: 0, length: MiB }] });
      const store = await openSource(file);
      try {
        // deno-lint-ignore require-await
        await store.lend(async (lent) => {
          const forged = { ...lent, ino: lent.ino + 1n };
          assert.throws(() => readLent(forged, new Uint8Array(4096), 0), /names another file/);
          assert.equal(readLent(lent, new Uint8Array(4096), 0), 4096);
        });
        // In a worker: under Deno its node:fs does not know the descriptor, so it reads
        // through FFI, which must check the identity too.
        for (const pool of pools) {
          await assert.rejects(
            store.lend((lent) =>
              pool.digest({ file: { ...lent, dev: lent.dev + 1n }, offset: 0, length: BS, blockSize: BS, hash: "hmac-sha256", key: KEY })
            ),
            /names another file/,
            `pool of ${pool.size}`,
          );
        }
      } finally {
        await store[Symbol.asyncDispose]();
      }
    });
  });

  test("a descriptor number checked once and then reused for another file is checked again", T, async () => {
    await withTempDir(async (dir) => {
      const first = path.join(dir, "a.img");
      const second = path.join(dir, "b.img");
      makeSparseFile(first, { size: MiB, chunks: [{ offset: 0, length: MiB, seed: 1 }] });
      makeSparseFile(second, { size: MiB, chunks: [{ offset: 0, length: MiB, seed: 2 }] });
      const a = await openSource(first);
      let aLent!: { fd: number; dev: bigint; ino: bigint };
      try {
        // deno-lint-ignore require-await
        await a.lend(async (lent) => {
          aLent = lent;
          assert.equal(readLent(lent, new Uint8Array(4096), 0), 4096);
        });
      } finally {
        await a[Symbol.asyncDispose]();
      }
      const b = await openSource(second);
      try {
        // deno-lint-ignore require-await
        await b.lend(async (lent) => {
          // The number a.img had, if it was reused, with a.img's identity: refused all the same.
          const forged = { ...lent, dev: aLent.dev, ino: aLent.ino };
          assert.throws(() => readLent(forged, new Uint8Array(4096), 0), /names another file/, `fd ${lent.fd} (a.img's was ${aLent.fd})`);
        });
      } finally {
        await b[Symbol.asyncDispose]();
      }
    });
  });

  test("a store keeps its descriptor open until a lent job settles", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "a.img");
      makeSparseFile(file, { size: MiB, chunks: [{ offset: 0, length: MiB }] });
      const store = await openSource(file);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let lentFd = -1;
      const job = store.lend(async (lent) => {
        lentFd = lent.fd;
        await held;
        return readLent(lent, new Uint8Array(MiB), 0);
      });
      const disposed = store[Symbol.asyncDispose]();
      let closed = false;
      disposed.then(() => (closed = true));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(closed, false, "dispose waits for the lent job");
      assert.ok(fs.fstatSync(lentFd).isFile());
      release();
      assert.equal(await job, MiB);
      await disposed;
      await assert.rejects(store.lend(() => Promise.resolve(0)), /already closed/);
    });
  });
});
