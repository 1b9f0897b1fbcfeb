/**
 * planRanges on real sparse files: ranges tile [0, size) in order; a data range gathers the
 * small extents that follow it (and the holes between them and after them) up to
 * DATA_RANGE_BYTES of data and MAX_RANGE_BLOCKS blocks, so a fragmented image costs a round
 * trip per few MiB of data rather than two per extent; long holes beyond are hole ranges.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { MAX_RANGE_BLOCKS } from "../protocol/constants.ts";
import { DATA_RANGE_BYTES, groupSpans, planRanges, type Range } from "../src/engine/ranges.ts";
import { openSource } from "../src/storage/open-source.ts";
import type { Extent } from "../src/storage/storage.ts";
import { type DataChunk, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 60_000 };
const KiB = 1024;
const MiB = 1 << 20;
const GiB = 1 << 30;
const BS = 64 * KiB;

async function plan(dir: string, size: number, chunks: DataChunk[]): Promise<{ ranges: Range[]; extents: Extent[] }> {
  const file = path.join(dir, "a.img");
  makeSparseFile(file, { size, chunks });
  await using store = await openSource(file);
  const ranges: Range[] = [];
  for await (const r of planRanges(store, { size, blockSize: BS })) ranges.push(r);
  return { ranges, extents: await store.dataExtents(0, size) };
}

/** Extents with touching ones joined (a listing in windows cuts an extent at a window's edge). */
function merged(extents: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const last = out.at(-1);
    if (last && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

/** The invariants every plan keeps; returns the data bytes of each data range. */
function checkPlan(ranges: Range[], extents: Extent[], size: number): number[] {
  let at = 0;
  const dataPerRange: number[] = [];
  const dataIn = (r: Range) =>
    extents.reduce((n, e) => n + Math.max(0, Math.min(r.offset + r.length, e.offset + e.length) - Math.max(r.offset, e.offset)), 0);
  for (const r of ranges) {
    assert.equal(r.offset, at, `ranges tile the file: one starts at ${at}`);
    assert.ok(r.length > 0 && r.length <= MAX_RANGE_BLOCKS * BS, `range at ${r.offset}: ${r.length} bytes`);
    assert.equal(r.offset % BS, 0);
    const data = dataIn(r);
    const clipped = extents
      .map((e) => ({ offset: Math.max(r.offset, e.offset), length: Math.min(r.offset + r.length, e.offset + e.length) - Math.max(r.offset, e.offset) }))
      .filter((e) => e.length > 0);
    assert.deepEqual(merged(r.extents ?? []), merged(clipped), `range at ${r.offset}: its extents are the file's there`);
    if (r.data) {
      assert.ok(data > 0 && data <= DATA_RANGE_BYTES, `data range at ${r.offset} holds ${data} data bytes`);
      dataPerRange.push(data);
    } else {
      assert.equal(data, 0, `hole range at ${r.offset} holds no data`);
    }
    at = r.offset + r.length;
  }
  assert.equal(at, size, "the ranges end at the file's size");
  return dataPerRange;
}

describe("planRanges", () => {
  test("200 extents of 64 KiB, 1 MiB apart: four data ranges of up to 4 MiB of data, holes included", T, async () => {
    await withTempDir(async (dir) => {
      const chunks = Array.from({ length: 200 }, (_, i) => ({ offset: i * MiB, length: 64 * KiB, seed: i }));
      const size = 256 * MiB;
      const { ranges, extents } = await plan(dir, size, chunks);
      assert.equal(extents.length, 200, "the file has 200 extents");
      const data = checkPlan(ranges, extents, size);
      // 12.5 MiB of data: four data ranges (64 extents, 64, 64, 8), the last one up to the end.
      assert.deepEqual(data, [4 * MiB, 4 * MiB, 4 * MiB, 8 * 64 * KiB]);
      assert.deepEqual(ranges.map((r) => [r.offset / MiB, r.length / MiB]), [[0, 64], [64, 64], [128, 64], [192, 64]]);
    });
  });

  test("a large extent goes in ranges of 4 MiB; a hole longer than MAX_RANGE_BLOCKS blocks is cut; small extents after it are gathered", T, async () => {
    await withTempDir(async (dir) => {
      const size = 3 * GiB;
      const chunks = [
        { offset: 0, length: 10 * MiB, seed: 1 },
        ...Array.from({ length: 4 }, (_, i) => ({ offset: 2 * GiB + i * 2 * MiB, length: 128 * KiB, seed: 2 + i })),
      ];
      const { ranges, extents } = await plan(dir, size, chunks);
      const data = checkPlan(ranges, extents, size);
      // 10 MiB: 4 + 4 + 2 MiB; the third takes the hole after it up to MAX_RANGE_BLOCKS blocks
      // (the next extent is 2 GiB on); the rest of that hole is a hole range.
      assert.deepEqual(data, [4 * MiB, 4 * MiB, 2 * MiB, 4 * 128 * KiB]);
      const third = ranges[2];
      assert.deepEqual([third.offset, third.length], [8 * MiB, MAX_RANGE_BLOCKS * BS]);
      assert.deepEqual(ranges.filter((r) => !r.data).map((r) => [r.offset, r.length]), [[8 * MiB + GiB, GiB - 8 * MiB]]);
      // The four small extents, the holes between them and the tail: one range.
      assert.deepEqual([ranges.at(-1)!.offset, ranges.at(-1)!.length, ranges.at(-1)!.data], [2 * GiB, GiB, true]);
    });
  });

  test("an empty file and a file of holes only", T, async () => {
    await withTempDir(async (dir) => {
      assert.deepEqual((await plan(dir, 0, [])).ranges, []);
      const size = 2 * GiB + 64 * KiB;
      const { ranges, extents } = await plan(dir, size, []);
      checkPlan(ranges, extents, size);
      assert.ok(ranges.every((r) => !r.data));
      assert.equal(ranges.length, 3);
    });
  });

  test("an extent across the plan's 64 GiB listing window: its range gets both halves", T, async () => {
    await withTempDir(async (dir) => {
      const size = 130 * GiB;
      const chunks = [
        { offset: 0, length: MiB, seed: 1 },
        { offset: 64 * GiB - MiB, length: 2 * MiB, seed: 2 },
        { offset: 64 * GiB + 3 * MiB, length: 64 * KiB, seed: 3 },
        { offset: 129 * GiB, length: MiB, seed: 4 },
      ];
      const { ranges, extents } = await plan(dir, size, chunks);
      checkPlan(ranges, extents, size);
      const across = ranges.find((r) => r.data && r.offset <= 64 * GiB - MiB && r.offset + r.length > 64 * GiB)!;
      assert.deepEqual(merged(across.extents!), [{ offset: 64 * GiB - MiB, length: 2 * MiB }, { offset: 64 * GiB + 3 * MiB, length: 64 * KiB }]);
    });
  });

  test("groupSpans: consecutive spans up to the data bound per group, a longer span alone, holes between them inside", () => {
    const spans = [
      { offset: 0, length: MiB },
      { offset: 2 * MiB, length: MiB },
      { offset: 8 * MiB, length: 2 * MiB },
      { offset: 16 * MiB, length: 5 * MiB },
      { offset: 32 * MiB, length: BS },
    ];
    assert.deepEqual(groupSpans(spans, 4 * MiB).map((g) => [g.offset, g.length, g.spans.length, g.dataBytes]), [
      [0, 10 * MiB, 3, 4 * MiB],
      [16 * MiB, 5 * MiB, 1, 5 * MiB],
      [32 * MiB, BS, 1, BS],
    ]);
    assert.deepEqual(groupSpans(spans, 0).map((g) => g.spans.length), [1, 1, 1, 1, 1], "a bound of 0: one span a group");
    assert.deepEqual(groupSpans([{ offset: 0, length: BS }, { offset: 64 * GiB, length: BS }], 4 * MiB).map((g) => [g.offset, g.length]), [
      [0, 64 * GiB + BS],
    ], "however long the hole between them");
    assert.deepEqual(groupSpans([], 4 * MiB), []);
  });
});
