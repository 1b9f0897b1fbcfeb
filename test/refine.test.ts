/**
 * Refinement (spec §5.8): only the changed 4 KiB pages of a differing block cross, in a local
 * sync, a push and a pull over real TCP (127.0.0.1), with real sparse files.
 *
 * 1. One page rewritten in a 64 KiB block sends 4 KiB of DATA (one REFINE round trip); a page
 *    written into a hole block sends only that page (no round trip); the result is
 *    byte-identical, sparse, and the root hash matched (the sync succeeded).
 * 2. A VM-like mix of changes (whole random blocks, single pages, zeroed blocks written and
 *    punched, pages zeroed, writes into holes) sends ≤ 1.05 × the bytes of the 4 KiB pages
 *    that really differ (the test computes that figure from the two images).
 * 3. --no-refine (or a 4 KiB block size) sends whole blocks: the fallback.
 * 4. A dry run counts what it would send, and writes nothing.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { syncLocal } from "../src/session/local-sync.ts";
import type { SyncReport } from "../src/session/client-session.ts";
import { platform } from "../src/platform/platform.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { authorize, clientSync, runCli, startListener, type TestServer } from "./helpers/network.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB;
const PAGE = 4 * KiB;
const T = { timeout: 60_000 };

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** Writes `bytes` into `file` at `offset` (the file keeps its size and other holes). */
function writeAt(file: string, offset: number, bytes: Uint8Array): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

function punch(file: string, offset: number, length: number): void {
  // Rewriting a copy without the range keeps the test independent of fallocate: copy the file
  // sparsely around the range, then truncate-and-rewrite.
  const data = fs.readFileSync(file);
  data.fill(0, offset, offset + length);
  const size = data.length;
  const fd = fs.openSync(file, "w");
  try {
    fs.ftruncateSync(fd, size);
    for (let at = 0; at < size; at += PAGE) {
      const page = data.subarray(at, Math.min(size, at + PAGE));
      if (page.some((b) => b !== 0)) fs.writeSync(fd, page, 0, page.length, at);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Bytes of the 4 KiB pages where `a` and `b` differ and `a` (the source) is not all zero there. */
function differingDataPageBytes(a: string, b: string): number {
  const x = fs.readFileSync(a);
  const y = fs.readFileSync(b);
  let n = 0;
  for (let at = 0; at < x.length; at += PAGE) {
    const end = Math.min(x.length, at + PAGE);
    const p = x.subarray(at, end);
    const q = y.subarray(at, Math.min(y.length, end));
    if (p.equals(q) && q.length === p.length) continue;
    if (p.some((v) => v !== 0)) n += end - at;
  }
  return n;
}

/** An image with data in its first 2 MiB and at 3 MiB, holes elsewhere (4 MiB). */
function makeImage(file: string): void {
  makeSparseFile(file, {
    size: 4 * MiB,
    chunks: [
      { offset: 0, length: 2 * MiB, seed: 3 },
      { offset: 3 * MiB, length: 256 * KiB, fill: "random" },
    ],
  });
}

type Way = "local" | "push" | "pull";

interface Setup {
  server?: TestServer;
  key?: ReturnType<typeof generateKeyPair>;
}

/** Syncs `src` to `dst` the given way. Push and pull go through a real listener whose root holds the remote file. */
async function syncWay(way: Way, dir: string, files: { src: string; dst: string }, options: { refine?: boolean; dryRun?: boolean } = {}, s: Setup = {}): Promise<SyncReport> {
  if (way === "local") {
    return await syncLocal(files.src, files.dst, { blockSize: BS, hash: "poly1305", dryRun: options.dryRun ?? false, pool, refine: options.refine });
  }
  const server = s.server!;
  const knownHosts = path.join(dir, "known_hosts");
  const common = { key: s.key!, pool, knownHosts, dryRun: options.dryRun, blockSize: BS, refine: options.refine };
  if (way === "push") {
    return await clientSync(server, { ...common, mode: "push", local: files.src, name: path.relative(server.root, files.dst) });
  }
  return await clientSync(server, { ...common, mode: "pull", local: files.dst, name: path.relative(server.root, files.src) });
}

/** Runs `body` with a source and a destination image, both in the listener's root. */
async function withImages(way: Way, body: (o: { dir: string; src: string; dst: string; s: Setup }) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const s: Setup = {};
    let root = path.join(dir, "files");
    if (way !== "local") {
      s.server = await startListener(dir, { pool });
      s.key = generateKeyPair();
      authorize(s.server.authorizedKeys, s.key);
      root = s.server.root;
    } else {
      fs.mkdirSync(root);
    }
    try {
      const src = path.join(root, "src.img");
      const dst = path.join(root, "dst.img");
      makeImage(src);
      await syncWay(way, dir, { src, dst }, {}, s); // the destination starts as a copy
      assert.equal(fileHash(dst), fileHash(src));
      await body({ dir, src, dst, s });
    } finally {
      await s.server?.listener.close();
    }
  });
}

for (const way of ["local", "push", "pull"] as const) {
  describe(`refinement, ${way}`, T, () => {
    test("one 4 KiB page rewritten in a 64 KiB block sends 4 KiB of DATA", T, async () => {
      await withImages(way, async ({ dir, src, dst, s }) => {
        writeAt(src, 5 * BS + 2 * PAGE, crypto.randomBytes(PAGE));
        const r = await syncWay(way, dir, { src, dst }, {}, s);
        assert.equal(fileHash(dst), fileHash(src), "bytes");
        assert.equal(r.local.bytesSent, PAGE, "DATA bytes");
        assert.equal(r.local.blocksRefined, 1);
        assert.ok(r.local.dataBytesOnWire <= PAGE);
        if (way !== "pull") assert.equal(r.remote.bytesWritten, PAGE, "bytes the destination wrote");
        else assert.equal(r.local.bytesWritten, PAGE, "bytes the destination wrote");
      });
    });

    test("a page written into a hole block sends only that page, with no round trip", T, async () => {
      await withImages(way, async ({ dir, src, dst, s }) => {
        const before = allocatedBytesOf(dst);
        writeAt(src, 2 * MiB + 3 * BS + 7 * PAGE, crypto.randomBytes(PAGE));
        const r = await syncWay(way, dir, { src, dst }, {}, s);
        assert.equal(fileHash(dst), fileHash(src), "bytes");
        assert.equal(r.local.bytesSent, PAGE, "DATA bytes");
        assert.equal(r.local.blocksRefined, 0, "no REFINE: the destination's block is zeros");
        if (platform.ffi) assert.ok(allocatedBytesOf(dst) <= before + PAGE, `allocated ${allocatedBytesOf(dst)} > ${before} + one page`);
      });
    });

    test("a VM-like mix of changes sends ≤ 1.05 × the bytes of the pages that differ", T, async () => {
      await withImages(way, async ({ dir, src, dst, s }) => {
        const old = path.join(dir, "old.img");
        fs.copyFileSync(dst, old);
        writeAt(src, 1 * BS, crypto.randomBytes(BS)); // whole random blocks
        writeAt(src, 3 * MiB + 2 * BS, crypto.randomBytes(BS));
        for (const b of [7, 11, 12, 20, 31]) writeAt(src, b * BS + (b % 16) * PAGE, crypto.randomBytes(PAGE)); // single pages
        writeAt(src, 9 * BS, new Uint8Array(BS)); // a block zeroed by writing zeros
        punch(src, 3 * MiB + 3 * BS, BS); // a block punched (TRIM)
        writeAt(src, 14 * BS + 4 * PAGE, new Uint8Array(PAGE)); // one page zeroed inside a block
        for (const o of [2 * MiB + 5 * PAGE, 2 * MiB + 40 * BS, 3 * MiB + 9 * BS + 15 * PAGE]) writeAt(src, o, crypto.randomBytes(PAGE)); // writes into holes
        writeAt(src, 16 * BS + 3 * PAGE, crypto.randomBytes(3 * PAGE)); // a short run of pages
        const differ = differingDataPageBytes(src, old);
        const allocatedSrc = allocatedBytesOf(src);
        const r = await syncWay(way, dir, { src, dst }, {}, s);
        assert.equal(fileHash(dst), fileHash(src), "bytes");
        assert.ok(r.local.bytesSent <= 1.05 * differ, `sent ${r.local.bytesSent} bytes of DATA for ${differ} bytes of differing pages`);
        assert.ok(r.local.bytesSent >= differ, `sent ${r.local.bytesSent} < ${differ}`);
        if (platform.ffi) assert.ok(allocatedBytesOf(dst) <= allocatedSrc + BS, `destination allocated ${allocatedBytesOf(dst)}, source ${allocatedSrc}`);
        // An identical rerun sends nothing and refines nothing.
        const again = await syncWay(way, dir, { src, dst }, {}, s);
        assert.equal(again.local.bytesSent, 0);
        assert.equal(again.local.blocksRefined, 0);
      });
    });

    test("--no-refine sends whole blocks", T, async () => {
      await withImages(way, async ({ dir, src, dst, s }) => {
        writeAt(src, 5 * BS + 2 * PAGE, crypto.randomBytes(PAGE));
        const r = await syncWay(way, dir, { src, dst }, { refine: false }, s);
        assert.equal(fileHash(dst), fileHash(src), "bytes");
        assert.equal(r.local.bytesSent, BS, "the whole block");
        assert.equal(r.local.blocksRefined, 0);
      });
    });

    test("a dry run counts the pages it would send and writes nothing", T, async () => {
      await withImages(way, async ({ dir, src, dst, s }) => {
        writeAt(src, 5 * BS + 2 * PAGE, crypto.randomBytes(PAGE));
        writeAt(src, 2 * MiB + 3 * BS, crypto.randomBytes(PAGE));
        const before = fileHash(dst);
        const r = await syncWay(way, dir, { src, dst }, { dryRun: true }, s);
        assert.equal(fileHash(dst), before, "nothing written");
        assert.equal(r.local.bytesSent, 2 * PAGE);
        assert.equal(r.local.dataBytesOnWire, 0);
      });
    });
  });
}

test("pull: many ranges refining at once (more than the server works on) all complete", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const src = path.join(server.root, "src.img");
      const dst = path.join(dir, "dst.img");
      const ranges = 48; // 1 MiB data ranges: far more than PULL_TASKS refining at once
      makeSparseFile(src, { size: ranges * MiB, chunks: [{ offset: 0, length: ranges * MiB, seed: 5 }] });
      fs.copyFileSync(src, dst);
      for (let i = 0; i < ranges; i++) writeAt(src, i * MiB + 3 * BS + PAGE, crypto.randomBytes(PAGE));
      const r = await clientSync(server, { mode: "pull", local: dst, name: "src.img", key, pool, knownHosts: path.join(dir, "known_hosts"), blockSize: BS });
      assert.equal(fileHash(dst), fileHash(src));
      assert.equal(r.local.bytesSent, ranges * PAGE);
      assert.equal(r.local.blocksRefined, ranges);
    } finally {
      await server.listener.close();
    }
  });
});

test("blocks rewritten whole soon go without REFINE round trips (RefinePolicy), same bytes", T, async () => {
  await withTempDir(async (dir) => {
    const src = path.join(dir, "src.img");
    const dst = path.join(dir, "dst.img");
    const SIZE = 128 * MiB; // more than the jobs started before the first refinement comes back
    makeSparseFile(src, { size: SIZE, chunks: [{ offset: 0, length: SIZE, seed: 1 }] });
    makeSparseFile(dst, { size: SIZE, chunks: [{ offset: 0, length: SIZE, seed: 2 }] });
    const r = await syncLocal(src, dst, { blockSize: BS, hash: "poly1305", dryRun: false, pool });
    assert.equal(fileHash(dst), fileHash(src));
    assert.equal(r.local.bytesSent, SIZE);
    const blocks = SIZE / BS;
    assert.ok(r.local.blocksRefined < blocks / 2, `${r.local.blocksRefined} of ${blocks} blocks refined`);
  });
});

test("the CLI: `ssync sync` refines by default; --no-refine sends whole blocks", T, async () => {
  await withTempDir(async (dir) => {
    const src = path.join(dir, "src.img");
    const dst = path.join(dir, "dst.img");
    makeImage(src);
    fs.copyFileSync(src, dst);
    for (const [flags, sent] of [[["--no-refine"], BS], [[], PAGE]] as const) {
      writeAt(src, 6 * BS + PAGE, crypto.randomBytes(PAGE));
      const r = await runCli(["sync", ...flags, "--json", src, dst], { config: path.join(dir, "config"), timeoutMs: 30_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).dataBytesSent, sent, `${flags.join(" ")}: ${r.stdout}`);
      assert.equal(fileHash(dst), fileHash(src));
    }
  });
});
