/**
 * The engine against the trivial sequential reference (helpers/reference-sync.ts), on seeded
 * random cases: sparse files up to 8 MiB apparent, sizes off the block size, holes, and
 * random mutations (changed bytes, zeroed blocks and ranges, new data, stale data only in the
 * destination, growth, shrink, an absent destination), pushed or pulled, with and without
 * FFI, through worker threads and through the in-process path (SSYNC_WORKERS=0's pool).
 *
 * Each case checks: final bytes equal the reference's; the blocks DATA (and, with refinement,
 * PATCH) carried are exactly the reference's written blocks (each once), the blocks ZERO
 * covered exactly its zeroed ones; the destination's writes touch exactly the written blocks
 * (with refinement, even-seeded cases: only their pages that changed, and every written
 * block is written or punched); its punches cover every
 * zeroed block and touch nothing else but written blocks or bytes that end up zero; its size
 * changes once, or not at all when it already had the source's size.
 *
 * Reproduce a failing case with SSYNC_TEST_SEED=<its seed> (the first case uses that seed).
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { type RecordedSync, recordedSync } from "./helpers/recorded-sync.ts";
import type { IoRange } from "./helpers/recording-storage.ts";
import { referenceSync } from "./helpers/reference-sync.ts";
import { bytesHash, type DataChunk, fileHash, makeSparseFile, patternBytes, withTempDir } from "./helpers/sparse.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const MAX_SIZE = 8 * MiB;
const CASES = 30;
const BASE_SEED = Number(process.env.SSYNC_TEST_SEED ?? 0x55c0ffee) >>> 0;

/** mulberry32: small, seedable, good enough to pick test cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case {
  blockSize: number;
  mode: "push" | "pull";
  ffi: boolean;
  workers: 0 | 2;
  /** What was done, for the failure message. */
  steps: string[];
}

/** Makes `src` and `dst` for one case: a shared old image, then mutations. */
function makeCase(seed: number, files: { src: string; dst: string }): Case {
  const rand = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1)); // inclusive
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];
  const c: Case = { blockSize: pick([4096, 16384, 65536]), mode: rand() < 0.35 ? "pull" : "push", ffi: rand() < 0.75, workers: pick([0, 2] as const), steps: [] };
  const bs = c.blockSize;
  const oldSize = int(1, MAX_SIZE);
  const chunks: DataChunk[] = Array.from({ length: int(0, 6) }, () => {
    const offset = rand() < 0.5 ? int(0, oldSize - 1) : Math.floor(int(0, oldSize - 1) / bs) * bs;
    const length = Math.min(oldSize - offset, int(1, MiB));
    const fill = rand() < 0.8 ? undefined : rand() < 0.5 ? 0 : int(1, 255);
    return { offset, length, fill, seed: int(1, 1000) };
  });
  makeSparseFile(files.dst, { size: oldSize, chunks });
  makeSparseFile(files.src, { size: oldSize, chunks });
  c.steps.push(`old image ${oldSize} B, chunks ${JSON.stringify(chunks)}`);
  const fd = { src: fs.openSync(files.src, "r+"), dst: fs.openSync(files.dst, "r+") };
  try {
    const size = (side: "src" | "dst") => fs.fstatSync(fd[side]).size;
    const put = (side: "src" | "dst", bytes: Uint8Array, at: number, what: string) => {
      const n = Math.min(bytes.length, size(side) - at);
      if (n <= 0) return;
      fs.writeSync(fd[side], bytes, 0, n, at);
      c.steps.push(`${what}: ${side} [${at}, ${at + n})`);
    };
    for (let k = int(1, 6); k > 0; k--) {
      const at = int(0, size("src") - 1);
      switch (pick(["bytes", "zero blocks", "zero range", "new data", "stale data", "grow", "shrink"] as const)) {
        case "bytes":
          put("src", crypto.randomBytes(int(1, 64)), at, "changed bytes");
          break;
        case "zero blocks":
          put("src", new Uint8Array(int(1, 4) * bs), Math.floor(at / bs) * bs, "zeroed blocks");
          break;
        case "zero range":
          put("src", new Uint8Array(int(1, 3 * bs)), at, "zeroed range");
          break;
        case "new data":
          put("src", patternBytes(int(1, 512 * KiB), { seed: int(1, 1000) }), at, "new data");
          break;
        case "stale data":
          put("dst", patternBytes(int(1, 256 * KiB), { seed: int(1, 1000) }), int(0, size("dst") - 1), "data only in the destination");
          break;
        case "grow": {
          const to = int(size("src"), MAX_SIZE);
          fs.ftruncateSync(fd.src, to);
          c.steps.push(`grew src to ${to}`);
          if (rand() < 0.5) put("src", patternBytes(int(1, 64 * KiB), { seed: 9 }), int(0, to - 1), "data");
          break;
        }
        case "shrink": {
          const to = int(1, size("src"));
          fs.ftruncateSync(fd.src, to);
          c.steps.push(`shrank src to ${to}`);
          break;
        }
      }
    }
    if (size("src") % bs === 0) fs.ftruncateSync(fd.src, size("src") === MAX_SIZE ? size("src") - 1 : size("src") + 1);
  } finally {
    fs.closeSync(fd.src);
    fs.closeSync(fd.dst);
  }
  if (rand() < 0.15) {
    fs.unlinkSync(files.dst);
    c.steps.push("destination absent");
  }
  return c;
}

function blocksOf(r: { offset: number; length: number }, bs: number): number[] {
  const out = [];
  for (let b = Math.floor(r.offset / bs); b * bs < r.offset + r.length; b++) out.push(b);
  return out;
}


/** Merged, ascending [start, end) intervals of the ranges. */
function merged(list: readonly IoRange[]): [number, number][] {
  const out: [number, number][] = [];
  for (const r of [...list].sort((a, b) => a.offset - b.offset)) {
    const last = out[out.length - 1];
    if (last && r.offset <= last[1]) last[1] = Math.max(last[1], r.offset + r.length);
    else out.push([r.offset, r.offset + r.length]);
  }
  return out;
}

function check(r: RecordedSync, ref: ReturnType<typeof referenceSync>, o: { c: Case; dst: string; oldSize: number; old: Uint8Array; refine: boolean }): void {
  const bs = o.c.blockSize;
  const size = ref.bytes.length;
  assert.equal(fileHash(o.dst), bytesHash(ref.bytes), "final bytes differ from the reference's");
  // Source → destination: sent in a push, received in a pull.
  const dir = o.c.mode === "push" ? "sent" : "received";
  const carried = [...r.wire.ofType(dir, "DATA"), ...r.wire.ofType(dir, "PATCH")];
  if (!o.refine) assert.equal(r.wire.ofType(dir, "PATCH").length, 0, "no PATCH without refinement");
  const data = carried.flatMap((m) => blocksOf({ offset: m.offset!, length: m.length! }, bs));
  const zero = r.wire.ofType(dir, "ZERO").flatMap((m) => blocksOf({ offset: m.offset!, length: m.length! }, bs));
  assert.deepEqual(data.sort((a, b) => a - b), ref.written, "blocks sent as DATA");
  assert.deepEqual(zero.sort((a, b) => a - b), ref.zeroed, "blocks sent as ZERO");
  const d = r.destination;
  const writtenBlocks = [...new Set(d.writes.flatMap((w) => blocksOf(w, bs)))].sort((a, b) => a - b);
  if (!o.refine) {
    assert.deepEqual(writtenBlocks, ref.written, "blocks the destination wrote");
  } else {
    const touched = new Set([...writtenBlocks, ...d.punches.flatMap((p) => blocksOf(p, bs))]);
    for (const b of writtenBlocks) assert.ok(ref.written.includes(b), `block ${b} written, but the reference writes it not`);
    for (const b of ref.written) assert.ok(touched.has(b), `block ${b} differs, but nothing was written or punched in it`);
    // Only changed pages reach the disk: every page written differs from the old destination's.
    const oldPage = (from: number, to: number) => {
      const page = new Uint8Array(to - from);
      if (from < o.old.length) page.set(o.old.subarray(from, Math.min(to, o.old.length)));
      return page;
    };
    for (const w of d.writes) {
      for (let at = w.offset; at < w.offset + w.length; at += 4096) {
        const to = Math.min(at + 4096, w.offset + w.length);
        const now = ref.bytes.subarray(at, to);
        assert.ok(!oldPage(at, to).every((x, i) => x === now[i]), `page at ${at} written, but it did not change`);
      }
    }
  }
  const punched = merged(d.punches);
  for (const b of ref.zeroed) {
    const [start, end] = [b * bs, Math.min(size, (b + 1) * bs)];
    assert.ok(punched.some(([s, e]) => s <= start && end <= e), `zeroed block ${b} not punched whole`);
  }
  const written = new Set(ref.written);
  for (const p of d.punches) {
    for (const b of blocksOf(p, bs)) {
      if (written.has(b)) continue;
      const from = Math.max(p.offset, b * bs);
      const to = Math.min(p.offset + p.length, (b + 1) * bs, size);
      assert.ok(ref.bytes.subarray(from, to).every((x) => x === 0), `punch [${from}, ${to}) in block ${b} that was neither written nor ends zero`);
    }
  }
  assert.deepEqual(d.setSizes, o.oldSize === size ? [] : [size], "destination size changes");
  assert.deepEqual([r.source.writes, r.source.punches, r.source.setSizes], [[], [], []], "the source is only read");
  const asked = r.wire.ranges("sent", o.c.mode === "push" ? "SIGS" : "READ_DIFF");
  let at = 0;
  for (const [offset, length] of asked) {
    assert.equal(offset, at, "ranges tile the file");
    at += length;
  }
  assert.equal(at, size, "ranges cover the file");
}

describe("engine against the sequential reference", { timeout: 60_000 }, () => {
  const pools = { 0: new WorkerPool({ size: 0 }), 2: new WorkerPool({ size: 2 }) };
  after(async () => {
    await pools[0][Symbol.asyncDispose]();
    await pools[2][Symbol.asyncDispose]();
  });
  for (let i = 0; i < CASES; i++) {
    const seed = (BASE_SEED + i) >>> 0;
    test(`seed ${seed}`, { timeout: 20_000 }, async () => {
      await withTempDir(async (dir) => {
        const src = path.join(dir, "src.img");
        const dst = path.join(dir, "dst.img");
        const c = makeCase(seed, { src, dst });
        const refine = seed % 2 === 0;
        try {
          const oldSize = fs.existsSync(dst) ? fs.statSync(dst).size : 0;
          const old = fs.existsSync(dst) ? new Uint8Array(fs.readFileSync(dst)) : new Uint8Array(0);
          const ref = referenceSync(src, dst, c.blockSize);
          assert.equal(bytesHash(ref.bytes), fileHash(src), "the reference itself ends with the source's bytes");
          const r = await recordedSync(src, dst, { mode: c.mode, blockSize: c.blockSize, pool: pools[c.workers], ffi: c.ffi, refine });
          check(r, ref, { c, dst, oldSize, old, refine });
        } catch (e) {
          const { steps, ...how } = c;
          console.error(`reference case failed (refine: ${refine}): SSYNC_TEST_SEED=${seed} ${JSON.stringify(how)}\n  ${steps.join("\n  ")}`);
          throw e;
        }
      });
    });
  }
});
