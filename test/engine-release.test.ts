import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { setImmediate as tick } from "node:timers/promises";
import { decode, encode } from "../protocol/codec.ts";
import { DIGEST_SIZE, HEADER_SIZE } from "../protocol/constants.ts";
import type { PatchMessage } from "../protocol/messages.ts";
import { DestinationWriter } from "../src/engine/destination-side.ts";
import { SideStats } from "../src/engine/side-context.ts";
import { diffRange, diffRangeTo, type Emitted } from "../src/engine/source-side.ts";
import type { JobOp } from "../src/engine/scan-job.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { openSource } from "../src/storage/open-source.ts";
import { writeOpOf } from "../src/session/refine-wire.ts";
import { makeSparseFile, readRange, withTempDir } from "./helpers/sparse.ts";

/**
 * The engine frees its MiB-sized buffers once they are dead (src/util/release-buffer.ts):
 * the source a job's read buffer once every DATA of it was sent or acknowledged, the
 * destination a DATA's record once its bytes are on disk. Real files, real workers.
 */
const MIB = 1 << 20;
const BS = 65536;
const KEY = new Uint8Array(32).fill(5);

async function diffAll(file: string, pool: WorkerPool, emit: (op: JobOp) => Promise<Emitted>) {
  await using store = await openSource(file);
  const ctx = { pool, store, hash: "poly1305" as const, key: KEY, blockSize: BS, size: store.size, stats: new SideStats(), signal: new AbortController().signal };
  // Digests the destination never has: every block differs and goes as DATA.
  const dst = new Uint8Array((store.size / BS) * DIGEST_SIZE).fill(0xee);
  await diffRange(ctx, { offset: 0, length: store.size, dst }, { zstdLevel: () => 0, dryRun: false, lookahead: 2, emit });
  await tick();
}

test("the source releases a job's read buffer once its DATA is free, and only then", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, "src.img");
    // A written zero block inside each MiB: each job's DATA are two views of its read buffer.
    const zeros = [0, 1, 2, 3].map((i) => ({ offset: i * MIB + MIB / 2, length: BS, fill: 0 }));
    makeSparseFile(file, { size: 4 * MIB, chunks: [{ offset: 0, length: 4 * MIB, fill: "random" }, ...zeros] });
    const want = fs.readFileSync(file);
    await using pool = new WorkerPool({ size: 2 });
    for (const mode of ["sent", "not said", "failed"] as const) {
      const ops: { offset: number; payload: Uint8Array; copy: Uint8Array }[] = [];
      let zeroOps = 0;
      await diffAll(file, pool, (op) => {
        if (op.kind === "zero") zeroOps++;
        if (op.kind !== "data") return Promise.resolve();
        assert.ok(op.payload!.length < op.payload!.buffer.byteLength, "a view of the read buffer");
        ops.push({ offset: op.offset, payload: op.payload!, copy: op.payload!.slice() });
        if (mode === "not said") return Promise.resolve();
        const free = mode === "sent" ? Promise.resolve() : Promise.reject(new Error("the link died"));
        return Promise.resolve({ free });
      });
      assert.equal(ops.length, 8, "two raw DATA per 1 MiB job");
      assert.equal(zeroOps, 4);
      for (const o of ops) assert.deepEqual(o.copy, new Uint8Array(want.subarray(o.offset, o.offset + o.copy.length)));
      for (const o of ops) {
        // Sent: the payload (a view of the job's read buffer) is detached with it; otherwise kept.
        assert.equal(o.payload.length, mode === "sent" ? 0 : o.copy.length, `${mode}: payload at ${o.offset}`);
        if (mode !== "sent") assert.deepEqual(o.payload, o.copy);
      }
    }
  });
});

test("a fan-out's job buffer, viewed by several targets' DATA, is released only once all of them are free", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, "src.img");
    makeSparseFile(file, { size: 2 * MIB, chunks: [{ offset: 0, length: 2 * MIB, fill: "random" }] });
    const want = fs.readFileSync(file);
    await using pool = new WorkerPool({ size: 2 });
    await using store = await openSource(file);
    const ctx = { pool, store, blockSize: BS, signal: new AbortController().signal };
    // Every block differs for both: each target's one DATA per job is the job's whole read buffer.
    const dst = () => new Uint8Array((store.size / BS) * DIGEST_SIZE).fill(0xee);
    const held: { payload: Uint8Array; offset: number }[] = [];
    let releaseSlow!: () => void;
    const slowFree = new Promise<void>((r) => releaseSlow = r);
    const target = (emit: (op: JobOp) => Promise<Emitted>, key: number) => ({
      hash: "poly1305" as const,
      key: new Uint8Array(32).fill(key),
      dst: dst(),
      stats: new SideStats(),
      signal: new AbortController().signal,
      zstdLevel: () => 0,
      dryRun: false,
      emit,
    });
    const fast = target((op) => Promise.resolve(op.kind === "data" ? { free: Promise.resolve() } : undefined), 1);
    const slow = target((op) => {
      if (op.kind === "data") held.push({ payload: op.payload!, offset: op.offset });
      return Promise.resolve(op.kind === "data" ? { free: slowFree } : undefined);
    }, 2);
    const outcomes = await diffRangeTo(ctx, { offset: 0, length: store.size }, { lookahead: 2 }, [fast, slow]);
    assert.ok(outcomes.every((o) => "digests" in o));
    assert.equal(fast.stats.blocksSent, 32);
    assert.equal(slow.stats.blocksSent, 32);
    await tick();
    // The fast target's DATA were sent long ago; the slow one's still read the same buffers.
    assert.equal(held.length, 2);
    for (const h of held) assert.deepEqual(h.payload, new Uint8Array(want.subarray(h.offset, h.offset + MIB)), `slow target's payload at ${h.offset}`);
    releaseSlow();
    await tick();
    await tick();
    for (const h of held) assert.equal(h.payload.length, 0, "released once both were free");
  });
});

test("the destination releases a DATA or PATCH record once written; a payload inside another buffer is left alone", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, "dst.img");
    makeSparseFile(file, { size: 3 * BS });
    await using store = await openDestination(file, { create: false, inplace: true });
    await using pool = new WorkerPool({ size: 1 });
    const ctx = { pool, store, hash: "poly1305" as const, key: KEY, blockSize: BS, size: 3 * BS, stats: new SideStats(), signal: new AbortController().signal };
    const writer = await DestinationWriter.create(ctx, { dryRun: false });
    writer.open(0, new Uint8Array(3 * DIGEST_SIZE));
    // A record as it arrives: header, then the payload up to its end.
    const record = new Uint8Array(HEADER_SIZE + BS).fill(0x31);
    await writer.write({ kind: "data", offset: 0, length: BS, payload: record.subarray(HEADER_SIZE), zstd: false });
    assert.equal(record.length, 0, "the record is released once written");
    // Not a record's tail (bytes follow it): someone else's buffer, never released.
    const shared = new Uint8Array(HEADER_SIZE + BS + 16).fill(0x42);
    await writer.write({ kind: "data", offset: BS, length: BS, payload: shared.subarray(HEADER_SIZE, HEADER_SIZE + BS), zstd: false });
    assert.equal(shared.length, HEADER_SIZE + BS + 16);
    assert.ok(shared.every((b) => b === 0x42));
    // A PATCH as decoded from its record: the payload follows the header and both masks.
    const patch: PatchMessage = { type: "PATCH", cookie: 1, offset: 2 * BS, length: BS, data: new Uint8Array([1, 0]), zeros: new Uint8Array(2), payload: new Uint8Array(4096).fill(0x77), zstd: false };
    const m = decode(encode(patch)) as PatchMessage;
    await writer.write(writeOpOf(m));
    assert.equal(m.payload!.length, 0, "the PATCH's record is released once applied");
    await writer.close(0);
    assert.ok(readRange(file, { offset: 0, length: BS }).every((b) => b === 0x31), "the first block is on disk");
    assert.ok(readRange(file, { offset: BS, length: BS }).every((b) => b === 0x42), "the second block is on disk");
    const third = readRange(file, { offset: 2 * BS, length: BS });
    assert.ok(third.subarray(0, 4096).every((b) => b === 0x77) && third.subarray(4096).every((b) => b === 0), "the patched page is on disk");
  });
});
