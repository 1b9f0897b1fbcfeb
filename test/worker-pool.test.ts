/**
 * The worker pool posts up to WORKER_DEPTH jobs to a worker at once (the next one waits in
 * the worker's inbox while it runs one): every job is still answered with its own result, in
 * any mix of kinds, and every job posted or queued settles when the pool is disposed. Only
 * jobs that go to a worker carry read-ahead advice (its fadvise blocks the calling thread).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { createBlockHasher, digestBlocks } from "../src/engine/block-hash.ts";
import { INLINE_JOB_BYTES, WORKER_DEPTH, WorkerPool } from "../src/engine/worker-pool.ts";
import { openSource } from "../src/storage/open-source.ts";
import { makeSparseFile, patternBytes, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 60_000 };
const MiB = 1 << 20;
const BS = 65536;
const KEY = new Uint8Array(32).fill(7);
const JOBS = 12;

describe("worker pool", () => {
  test(`${JOBS} jobs at once on one worker (${WORKER_DEPTH} posted at a time) each get their own digests`, T, async () => {
    assert.ok(WORKER_DEPTH >= 2, "the pool posts more than one job per worker");
    await withTempDir(async (dir) => {
      const file = path.join(dir, "a.img");
      makeSparseFile(file, { size: JOBS * MiB, chunks: [{ offset: 0, length: JOBS * MiB, seed: 3 }] });
      const hasher = await createBlockHasher("poly1305", KEY);
      await using store = await openSource(file);
      await using pool = new WorkerPool({ size: 1 });
      const results = await store.lend((lent) =>
        Promise.all(Array.from({ length: JOBS }, (_, i) =>
          // Every third a diff job against all-zero digests: its ops name its own offset.
          i % 3 === 2
            ? pool.diff({
              file: lent,
              offset: i * MiB,
              length: MiB,
              blockSize: BS,
              targets: [{ hash: "poly1305", key: KEY, dst: new Uint8Array(16 * (MiB / BS)), zstdLevel: 0, withoutPayload: true }],
            }).then((r) => ({ digests: r.targets[0].digests, ops: r.targets[0].ops }))
            : pool.digest({ file: lent, offset: i * MiB, length: MiB, blockSize: BS, hash: "poly1305", key: KEY }).then((r) => ({ digests: r.digests, ops: undefined }))
        ))
      );
      for (let i = 0; i < JOBS; i++) {
        const want = digestBlocks(hasher, patternBytes(MiB, { offset: i * MiB, seed: 3 }), BS, i * MiB / BS);
        assert.deepEqual(results[i].digests, want, `job ${i}: its own blocks' digests`);
        if (results[i].ops) {
          assert.deepEqual(results[i].ops!.map((op) => [op.kind, op.offset, op.length]), [["data", i * MiB, MiB]], `job ${i}: its own DATA run`);
        }
      }
    });
  });

  test("only a job run by a worker thread is one to carry read-ahead advice (onWorker)", T, async () => {
    await using pool = new WorkerPool({ size: 1 });
    await using none = new WorkerPool({ size: 0 });
    assert.equal(pool.onWorker(INLINE_JOB_BYTES), false, "a small job runs on the calling thread");
    assert.equal(pool.onWorker(INLINE_JOB_BYTES + 1), true);
    assert.equal(none.onWorker(MiB), false, "a pool of size 0 runs every job on the calling thread");
  });

  test("disposing the pool settles every job, posted to a worker or waiting", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "b.img");
      makeSparseFile(file, { size: 8 * MiB, chunks: [{ offset: 0, length: 8 * MiB, seed: 4 }] });
      await using store = await openSource(file);
      const pool = new WorkerPool({ size: 1 });
      const outcomes = await store.lend(async (lent) => {
        const jobs = Array.from({ length: 8 }, (_, i) => pool.digest({ file: lent, offset: i * MiB, length: MiB, blockSize: BS, hash: "hmac-sha256", key: KEY }));
        const settled = Promise.allSettled(jobs); // observed from the start
        await pool[Symbol.asyncDispose]();
        return await settled;
      });
      assert.equal(outcomes.length, 8);
      const rejected = outcomes.filter((o) => o.status === "rejected");
      // Those not yet answered (at least the ones waiting in the pool) fail with the pool's closing.
      assert.ok(rejected.length >= 8 - WORKER_DEPTH, `${rejected.length} of 8 rejected`);
      for (const o of rejected) assert.match(String((o as PromiseRejectedResult).reason), /worker pool closed/);
    });
  });

  test("a job of several spans gives what one job per span gives: digest lists of the spans' blocks only, the holes not its own", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "c.img");
      const spans = [{ offset: 0, length: 3 * BS }, { offset: MiB, length: BS }, { offset: 2 * MiB, length: MiB }];
      makeSparseFile(file, { size: 4 * MiB, chunks: spans.map((s, i) => ({ ...s, seed: 10 + i })) });
      const hasher = await createBlockHasher("poly1305", KEY);
      const job = { offset: 0, length: 3 * MiB };
      const blocks = (3 * BS + BS + MiB) / BS;
      // The destination's digests of the spans' blocks: the first span's as the source has them
      // but its second, garbage elsewhere.
      const dst = new Uint8Array(16 * blocks).fill(0x5a);
      const first = digestBlocks(hasher, patternBytes(3 * BS, { offset: 0, seed: 10 }), BS, 0);
      dst.set(first);
      dst.fill(0xa5, 16 * 1, 16 * 2);
      await using store = await openSource(file);
      for (const size of [0, 1]) {
        await using pool = new WorkerPool({ size });
        const target = { hash: "poly1305" as const, key: KEY, zstdLevel: 0, withoutPayload: true };
        let at = 0;
        const spanDst = spans.map((sp) => dst.slice(16 * at, 16 * (at += sp.length / BS)));
        const { grouped, single, digest } = await store.lend(async (lent) => ({
          grouped: await pool.diff({ file: lent, ...job, spans, blockSize: BS, targets: [{ ...target, dst }] }),
          single: await Promise.all(spans.map((sp, i) => pool.diff({ file: lent, ...sp, blockSize: BS, targets: [{ ...target, dst: spanDst[i] }] }))),
          digest: await pool.digest({ file: lent, ...job, spans, blockSize: BS, hash: "poly1305", key: KEY }),
        }));
        const want = new Uint8Array(16 * blocks);
        at = 0;
        for (const r of single) {
          want.set(r.targets[0].digests, at);
          at += r.targets[0].digests.length;
        }
        assert.deepEqual(grouped.targets[0].digests, want, `pool of ${size}: the spans' digests, one after the other`);
        assert.deepEqual(digest.digests, want, `pool of ${size}: a digest job of the same spans`);
        assert.equal(grouped.bytesRead, 3 * BS + BS + MiB, "only the spans are read");
        await assert.rejects(
          store.lend((lent) => pool.diff({ file: lent, ...job, spans, blockSize: BS, targets: [{ ...target, dst: new Uint8Array(16 * job.length / BS) }] })),
          /digests of 768 bytes for 20 blocks/,
          "a digest list for the whole job, holes included, is refused",
        );
        const ops = (r: typeof grouped) => r.targets[0].ops.map((op) => [op.kind, op.offset, op.length]);
        assert.deepEqual(ops(grouped), [...ops(single[0]), ...ops(single[1]), ...ops(single[2])], "no op for the holes");
        assert.deepEqual(ops(single[0]), [["data", BS, BS]], "the first span: only its second block differs");
      }
    });
  });
});
