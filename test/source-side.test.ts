/**
 * The source's half of a range (source-side.ts) when one job holds several spans far apart:
 * the job sees only its spans' digests, and the session compares the holes between them, so
 * the ops come out in offset order with ZERO wherever a hole faces destination data, for each
 * target of a fan-out. Real sparse files, real workers.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { DIGEST_SIZE } from "../protocol/constants.ts";
import { createBlockHasher, digestBlocks } from "../src/engine/block-hash.ts";
import { SideStats } from "../src/engine/side-context.ts";
import { diffRangeTo } from "../src/engine/source-side.ts";
import type { JobOp } from "../src/engine/scan-job.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { openSource } from "../src/storage/open-source.ts";
import { makeSparseFile, patternBytes, withTempDir } from "./helpers/sparse.ts";

const MiB = 1 << 20;
const BS = 65536;
const KEY = new Uint8Array(32).fill(7);

test("a job's spans far apart: ops in offset order, ZERO where its holes face destination data, per target", { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, "src.img");
    const size = 256 * MiB;
    // Small extents far apart: one job (≤ JOB_GROUP_BYTES of data) reaching across long holes.
    const spans = [0, 40, 41, 1000, 3000, 4095].map((b) => ({ offset: b * BS, length: BS, seed: 30 + b }));
    makeSparseFile(file, { size, chunks: spans });
    const hasher = await createBlockHasher("poly1305", KEY);
    const blocks = size / BS;
    const digestOf = (b: number) => digestBlocks(hasher, patternBytes(BS, { offset: b * BS, seed: 30 + b }), BS, b);
    // Target A: has every source block but block 41, and data in hole blocks 1, 500 and 4094.
    // Target B: is all holes but block 3000, which it has as the source.
    const a = new Uint8Array(blocks * DIGEST_SIZE);
    for (const s of spans) if (s.offset !== 41 * BS) a.set(digestOf(s.offset / BS), (s.offset / BS) * DIGEST_SIZE);
    for (const b of [1, 500, 4094]) a.fill(0x11, b * DIGEST_SIZE, (b + 1) * DIGEST_SIZE);
    const b = new Uint8Array(blocks * DIGEST_SIZE);
    b.set(digestOf(3000), 3000 * DIGEST_SIZE);
    for (const poolSize of [0, 2]) {
      await using pool = new WorkerPool({ size: poolSize });
      await using store = await openSource(file);
      const signal = new AbortController().signal;
      const got: [string, number, number][][] = [[], []];
      const targets = [a, b].map((dst, i) => ({
        hash: "poly1305" as const,
        key: KEY,
        dst,
        stats: new SideStats(),
        signal,
        zstdLevel: () => 0,
        dryRun: true,
        emit: (op: JobOp) => {
          got[i].push([op.kind, op.offset / BS, op.length / BS]);
          return Promise.resolve();
        },
      }));
      const outcomes = await diffRangeTo({ pool, store, blockSize: BS, signal }, { offset: 0, length: size }, { lookahead: 2 }, targets);
      assert.deepEqual(got[0], [["zero", 1, 1], ["data", 41, 1], ["zero", 500, 1], ["zero", 4094, 1]], `pool of ${poolSize}: target A`);
      assert.deepEqual(got[1], [["data", 0, 1], ["data", 40, 2], ["data", 1000, 1], ["data", 4095, 1]], `pool of ${poolSize}: target B`);
      const want = new Uint8Array(blocks * DIGEST_SIZE);
      for (const s of spans) want.set(digestOf(s.offset / BS), (s.offset / BS) * DIGEST_SIZE);
      for (const o of outcomes) {
        assert.ok("digests" in o);
        assert.deepEqual(o.digests, want, `pool of ${poolSize}: the source's digests in place, zeros for its holes`);
      }
      assert.equal(targets[0].stats.bytesRead, spans.length * BS, "only the spans are read");
    }
  });
});
