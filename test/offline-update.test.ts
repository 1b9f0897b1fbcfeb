/**
 * Air-gapped updates (issue 12, scope 3): `ssync signature` on the destination, `ssync diff` on
 * the source, `ssync apply` on the destination, through the real CLI (Deno suite only).
 * 1. A round trip on a 3 GiB apparent sparse image with a few MiB of data: holes becoming
 *    data, data becoming holes, pages changed, growth to an unaligned size, then a shrink
 *    (refused without --allow-shrink) and a growth from a partial last block: byte-identical, sparse (allocated bytes), the source
 *    read once along its extents, a dry run that changes nothing, a rerun that finds it applied.
 * 2. Refusals, each leaving the destination byte-identical and no journal: a flipped byte in
 *    the clear header, in the first, a middle and the last chunk, in a chunk word and in the
 *    last tag; chunks swapped, dropped or spliced in from another update; bytes after the end;
 *    truncations; an update sealed for another machine's key; one made against an
 *    older state of the destination; one from a sender not in authorized_keys (and one that
 *    is read-only there); a diff whose signature's key is not trusted.
 * 3. kill -9 during apply (SSYNC_TEST_CRASH, src/storage/crash-point.ts), before and after
 *    the commit point, then apply again: identical.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { CHUNK_LENGTH_MASK, UPDATE_HEADER_SIZE } from "../protocol/offline-format.ts";
import { openSource } from "../src/storage/open-source.ts";
import { fingerprint } from "../src/trust/keys.ts";
import type { KeyPair } from "../src/noise/x25519.ts";
import { authorize, type CliResult, finished, makeKey, runCli, spawnCli } from "./helpers/network.ts";
import { allocatedBytesOf, type DataChunk, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 120_000 };
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

interface Machines {
  dir: string;
  /** XDG_CONFIG_HOME of the destination machine (host_key, authorized_keys) and of the source (id_ssync). */
  dstConfig: string;
  srcConfig: string;
  hostKey: KeyPair;
  sender: KeyPair;
  /** The fingerprint `--to` names. */
  to: string;
}

async function withMachines(body: (m: Machines) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const dstConfig = path.join(dir, "dst-config");
    const srcConfig = path.join(dir, "src-config");
    fs.mkdirSync(path.join(dstConfig, "ssync"), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(srcConfig, "ssync"), { recursive: true, mode: 0o700 });
    const hostKey = await makeKey(path.join(dstConfig, "ssync", "host_key"));
    const sender = await makeKey(path.join(srcConfig, "ssync", "id_ssync"));
    authorize(path.join(dstConfig, "ssync", "authorized_keys"), sender);
    await body({ dir, dstConfig, srcConfig, hostKey, sender, to: fingerprint(hostKey.publicKey) });
  });
}

function json(r: CliResult): Record<string, number | string | boolean> {
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  assert.ok(line.startsWith("{"), `no JSON on stdout: ${r.stdout} / ${r.stderr}`);
  return JSON.parse(line);
}

function ok(r: CliResult, what: string): Record<string, number | string | boolean> {
  assert.equal(r.code, 0, `${what}: exit ${r.code} ${r.signal ?? ""}: ${r.stderr}`);
  return json(r);
}

/**
 * SHA-256 of a file's size and of its non-zero 64 KiB blocks with their offsets: equal for
 * equal contents whatever is allocated, and only the data extents are read (a 3 GiB image
 * with a few MiB of data costs milliseconds, where reading it whole costs seconds).
 */
async function contentHash(file: string): Promise<string> {
  const store = await openSource(file);
  try {
    const h = crypto.createHash("sha256").update(String(store.size));
    const buf = new Uint8Array(64 * KiB);
    for (const e of await store.dataExtents(0, store.size)) {
      for (let at = Math.floor(e.offset / buf.length) * buf.length; at < e.offset + e.length; at += buf.length) {
        const n = await store.read(buf, at);
        const block = buf.subarray(0, n);
        if (block.some((b) => b !== 0)) h.update(`@${at}:`).update(block);
      }
    }
    return h.digest("hex");
  } finally {
    await store[Symbol.asyncDispose]();
  }
}

function copySparse(from: string, to: string): void {
  execFileSync("cp", ["--sparse=always", from, to]);
}

function journalBeside(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.ssync-journal`);
}

const signature = (m: Machines, dst: string, sig: string, extra: string[] = []) =>
  runCli(["signature", "--json", dst, "-o", sig, ...extra], { config: m.dstConfig });
const diff = (m: Machines, src: string, sig: string, out: string, extra: string[] = []) =>
  runCli(["diff", "--json", src, sig, "-o", out, "--to", m.to, ...extra], { config: m.srcConfig });
const apply = (m: Machines, update: string, dst: string, extra: string[] = []) =>
  runCli(["apply", "--json", update, dst, ...extra], { config: m.dstConfig });

const OLD = 3 * GiB;
const NEW = OLD + 5 * MiB + 12345;
const OLD_CHUNKS: DataChunk[] = [
  { offset: 0, length: 512 * KiB, seed: 1 },
  { offset: 512 * KiB, length: 512 * KiB, seed: 2 },
  { offset: 700 * MiB, length: 2 * MiB, seed: 3 }, // becomes a hole
  { offset: 1536 * MiB, length: 512 * KiB, seed: 4 }, // unchanged
  { offset: OLD - 256 * KiB, length: 256 * KiB, seed: 5 }, // rewritten
];
const NEW_CHUNKS: DataChunk[] = [
  OLD_CHUNKS[0],
  OLD_CHUNKS[1],
  { offset: 576 * KiB, length: 4 * KiB, seed: 9 }, // one page of block 9
  OLD_CHUNKS[3],
  { offset: OLD - 256 * KiB, length: 256 * KiB, seed: 6 },
  { offset: 2 * GiB, length: MiB, fill: "random" }, // a hole becomes data
  { offset: 2.5 * GiB, length: MiB, fill: 0x41 }, // compressible
  { offset: OLD + 4 * MiB, length: NEW - (OLD + 4 * MiB), seed: 7 }, // past the old end, to an unaligned end
];

describe("offline: signature → diff → apply", () => {
  test("a 3 GiB sparse image: grown, changed, then shrunk; identical and sparse, the source read once", T, async () => {
    await withMachines(async (m) => {
      const dst = path.join(m.dir, "dst.img");
      const src = path.join(m.dir, "src.img");
      const sig = path.join(m.dir, "dst.sig");
      const update = path.join(m.dir, "update.ssync");
      makeSparseFile(dst, { size: OLD, chunks: OLD_CHUNKS });
      makeSparseFile(src, { size: NEW, chunks: NEW_CHUNKS });
      const oldHash = await contentHash(dst);

      const s = ok(await signature(m, dst, sig), "signature");
      assert.equal(fs.statSync(sig).mode & 0o777, 0o600, "the signature holds the hash key: 0600");
      assert.equal(s.hostKey, m.to, "sealed to the host key");
      assert.equal(s.bytesRead, 3 * MiB + 768 * KiB, "only the destination's data is read");
      assert.ok(fs.statSync(sig).size < 64 * KiB, `a signature of 3 GiB with 4 MiB of data is small: ${fs.statSync(sig).size} bytes`);

      const d = ok(await diff(m, src, sig, update), "diff");
      assert.equal(fs.statSync(update).mode & 0o777, 0o600);
      const srcAllocated = allocatedBytesOf(src);
      assert.ok((d.bytesRead as number) >= srcAllocated - 64 * KiB && (d.bytesRead as number) <= srcAllocated + 16 * 64 * KiB, `the source is read once along its extents: ${d.bytesRead} of ${srcAllocated} allocated`);
      // Differing: block 9 (one page), the rewritten 256 KiB, 2 MiB of new data and the tail.
      assert.equal(d.bytesSent, 64 * KiB + 256 * KiB + 2 * MiB + (NEW - (OLD + 4 * MiB)), "only differing blocks go into the update");
      assert.equal(d.bytesZeroed, 2 * MiB, "the data that became a hole is a ZERO range");
      assert.ok((d.dataBytesInUpdate as number) < (d.bytesSent as number) - 900 * KiB, `zstd where it pays: ${d.dataBytesInUpdate} of ${d.bytesSent}`);
      assert.ok(fs.statSync(update).size < (d.bytesSent as number), "the update holds no more than the differing blocks");

      const dry = ok(await apply(m, update, dst, ["--dry-run"]), "apply --dry-run");
      assert.equal(dry.dryRun, true);
      assert.equal(dry.changed, false);
      assert.equal(dry.bytesChanged, d.bytesSent);
      assert.equal(dry.bytesZeroed, 2 * MiB);
      assert.equal(dry.sizeAfter, NEW);
      assert.equal(await contentHash(dst), oldHash, "a dry run changes nothing");
      assert.equal(fs.statSync(dst).size, OLD);

      const a = ok(await apply(m, update, dst), "apply");
      assert.equal(a.changed, true);
      assert.equal(a.alreadyApplied, false);
      assert.equal(fs.statSync(dst).size, NEW);
      assert.equal(await contentHash(dst), await contentHash(src), "byte-identical");
      assert.ok(allocatedBytesOf(dst) <= srcAllocated + 64 * KiB, `sparse: ${allocatedBytesOf(dst)} allocated, the source ${srcAllocated}`);
      assert.equal(a.bytesRead, s.bytesRead, "the destination is read once, along its extents");
      assert.equal(a.bytesWritten, d.bytesSent, "only the differing blocks are written");
      assert.equal(a.bytesPunched, 2 * MiB, "the ZERO range is punched, not written");
      assert.ok(!fs.existsSync(journalBeside(dst)), "no journal left");

      const again = ok(await apply(m, update, dst), "apply again");
      assert.equal(again.alreadyApplied, true, "a second apply finds it done");
      assert.equal(await contentHash(dst), await contentHash(src));

      // Shrink to an unaligned size: the tail's data is cut, which needs --allow-shrink.
      const small = path.join(m.dir, "small.img");
      const SMALL = OLD + 4 * MiB + 700;
      makeSparseFile(small, { size: SMALL, chunks: [...NEW_CHUNKS.slice(0, -1), { offset: OLD + 4 * MiB, length: 700, seed: 7 }] });
      ok(await signature(m, dst, sig), "second signature");
      const refused = await diff(m, small, sig, update + "2");
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /--allow-shrink/);
      assert.ok(!fs.existsSync(update + "2"), "a refused diff leaves no file");
      ok(await diff(m, small, sig, update + "2", ["--allow-shrink"]), "diff --allow-shrink");
      ok(await apply(m, update + "2", dst), "apply the shrink");
      assert.equal(fs.statSync(dst).size, SMALL);
      assert.equal(await contentHash(dst), await contentHash(small), "byte-identical after the shrink");

      // And back: the old last block is partial and grows whole (its old digest cannot stand).
      ok(await signature(m, dst, sig), "third signature");
      const back = ok(await diff(m, src, sig, update + "3"), "diff growing from a partial last block");
      // The tail (its first block, partial before, sent again) and the random MiB, drawn anew for small.img.
      assert.equal(back.bytesSent, NEW - (OLD + 4 * MiB) + MiB, "only the differing blocks");
      ok(await apply(m, update + "3", dst), "apply the growth");
      assert.equal(fs.statSync(dst).size, NEW);
      assert.equal(await contentHash(dst), await contentHash(src), "byte-identical after growing back");
    });
  });
});

/** A 64 MiB destination and the update that makes it `src` (1.5 MiB of random changes: several chunks). */
async function withUpdate(body: (m: Machines, u: { dst: string; src: string; update: string; sig: string; oldHash: string }) => Promise<void>): Promise<void> {
  await withMachines(async (m) => {
    const dst = path.join(m.dir, "dst.img");
    const src = path.join(m.dir, "src.img");
    const sig = path.join(m.dir, "dst.sig");
    const update = path.join(m.dir, "update.ssync");
    const base: DataChunk[] = [{ offset: 0, length: 2 * MiB, seed: 1 }, { offset: 40 * MiB, length: MiB, seed: 2 }];
    makeSparseFile(dst, { size: 64 * MiB, chunks: base });
    makeSparseFile(src, { size: 64 * MiB, chunks: [...base, { offset: 8 * MiB, length: 1536 * KiB, fill: "random" }, { offset: 40 * MiB, length: 64 * KiB, seed: 3 }] });
    ok(await signature(m, dst, sig), "signature");
    ok(await diff(m, src, sig, update), "diff");
    await body(m, { dst, src, update, sig, oldHash: await contentHash(dst) });
  });
}

/** Offsets of the update's chunks (their words), from the clear header on. */
function chunkOffsets(update: string): number[] {
  const b = fs.readFileSync(update);
  const out: number[] = [];
  for (let at = UPDATE_HEADER_SIZE; at < b.length;) {
    out.push(at);
    at += 4 + (b.readUInt32BE(at) & CHUNK_LENGTH_MASK);
  }
  return out;
}

describe("offline: refusals leave the destination untouched", () => {
  test("a flipped byte anywhere, a truncated file", T, async () => {
    await withUpdate(async (m, u) => {
      const chunks = chunkOffsets(u.update);
      assert.ok(chunks.length >= 4, `the update spans several chunks (${chunks.length})`);
      const size = fs.statSync(u.update).size;
      const middle = chunks[Math.floor(chunks.length / 2)];
      const last = chunks.at(-1)!;
      // A second update of the same change, sealed anew (another ephemeral key): its chunks must not splice in.
      const second = path.join(m.dir, "second.ssync");
      ok(await diff(m, u.src, u.sig, second), "a second diff");
      const other = fs.readFileSync(second);
      assert.deepEqual(chunkOffsets(second), chunks, "both updates cut their chunks alike");
      const chunk = (b: Buffer, k: number) => b.subarray(chunks[k], chunks[k + 1]);
      const cases: { name: string; flip?: number; mask?: number; cut?: number; edit?: (b: Buffer) => Buffer; code: number; error: RegExp }[] = [
        { name: "two chunks swapped", edit: (b) => Buffer.concat([b.subarray(0, chunks[1]), chunk(b, 2), chunk(b, 1), b.subarray(chunks[3])]), code: 1, error: /chunk 1 fails to authenticate/ },
        { name: "a chunk of another update spliced in", edit: (b) => Buffer.concat([b.subarray(0, chunks[1]), chunk(other, 1), b.subarray(chunks[2])]), code: 1, error: /chunk 1 fails to authenticate/ },
        { name: "a chunk dropped", edit: (b) => Buffer.concat([b.subarray(0, chunks[1]), b.subarray(chunks[2])]), code: 1, error: /chunk 1 fails to authenticate/ },
        { name: "bytes after the last chunk", edit: (b) => Buffer.concat([b, Buffer.from([0])]), code: 1, error: /after its last chunk/ },
        { name: "magic", flip: 0, code: 1, error: /not an ssync update/ },
        { name: "recipient key", flip: 12 + 5, code: 5, error: /sealed for/ },
        { name: "sender key", flip: 44 + 5, code: 5, error: /not in/ },
        { name: "ephemeral key", flip: 76 + 5, code: 1, error: /authenticate/ },
        { name: "first chunk", flip: chunks[0] + 4 + 30, code: 1, error: /chunk 0 fails to authenticate/ },
        { name: "a chunk word", flip: middle + 3, code: 1, error: /authenticate|outside|truncated/ },
        { name: "a middle chunk", flip: middle + 4 + 1000, code: 1, error: /fails to authenticate/ },
        { name: "the last chunk", flip: last + 4 + 10, code: 1, error: /fails to authenticate/ },
        { name: "the last tag", flip: size - 1, code: 1, error: /fails to authenticate/ },
        { name: "the last chunk's flag", flip: last, mask: 0x80, code: 1, error: /authenticate/ },
        { name: "cut inside the header", cut: 50, code: 1, error: /truncated/ },
        { name: "cut inside a chunk", cut: middle + 2000, code: 1, error: /truncated/ },
        { name: "cut before the last chunk", cut: last, code: 1, error: /truncated/ },
        { name: "cut its last byte", cut: size - 1, code: 1, error: /truncated/ },
      ];
      const run = async (c: (typeof cases)[number], i: number) => {
        const dst = path.join(m.dir, `dst-${i}.img`);
        const bad = path.join(m.dir, `bad-${i}.ssync`);
        copySparse(u.dst, dst);
        const b = fs.readFileSync(u.update);
        if (c.flip !== undefined) b[c.flip] ^= c.mask ?? 0x01;
        fs.writeFileSync(bad, c.edit ? c.edit(b) : c.cut !== undefined ? b.subarray(0, c.cut) : b);
        const r = await apply(m, bad, dst);
        assert.equal(r.code, c.code, `${c.name}: exit ${r.code}: ${r.stderr}`);
        assert.match(r.stderr, c.error, `${c.name}: ${r.stderr}`);
        assert.equal(await contentHash(dst), u.oldHash, `${c.name}: the destination is untouched`);
        assert.ok(!fs.existsSync(journalBeside(dst)), `${c.name}: no journal left`);
        const j = json(r);
        assert.equal(j.ok, false);
        fs.rmSync(dst);
      };
      for (let i = 0; i < cases.length; i += 4) await Promise.all(cases.slice(i, i + 4).map((c, k) => run(c, i + k)));
      // The intact update still applies.
      ok(await apply(m, u.update, u.dst), "the intact update");
      assert.equal(await contentHash(u.dst), await contentHash(u.src));
    });
  });

  test("another machine's key, an older state, unknown and read-only senders, an untrusted signature", T, async () => {
    await withUpdate(async (m, u) => {
      const other = await makeKey(path.join(m.dir, "other_host"));
      const stranger = await makeKey(path.join(m.dir, "stranger"));
      const otherSig = path.join(m.dir, "other.sig");
      const forOther = path.join(m.dir, "for-other.ssync");
      const fromStranger = path.join(m.dir, "from-stranger.ssync");
      const [s1, s2] = await Promise.all([
        signature(m, u.dst, otherSig, ["--key", path.join(m.dir, "other_host.pub")]),
        runCli(["diff", "--json", u.src, u.sig, "-o", fromStranger, "--to", m.to, "--key", path.join(m.dir, "stranger")], { config: m.srcConfig }),
      ]);
      ok(s1, "signature for another key");
      ok(s2, "diff by a stranger");
      ok(await runCli(["diff", "--json", u.src, otherSig, "-o", forOther, "--to", fingerprint(other.publicKey)], { config: m.srcConfig }), "diff for another key");

      const [a1, a2] = await Promise.all([apply(m, forOther, u.dst), apply(m, fromStranger, u.dst, ["--wait", "10"])]);
      assert.equal(a1.code, 5, a1.stderr);
      assert.match(a1.stderr, new RegExp(`sealed for ${escape(fingerprint(other.publicKey))}`));
      assert.equal(json(a1).error && (json(a1).error as unknown as { code: string }).code, "auth");
      assert.equal(a2.code, 5, a2.stderr);
      assert.match(a2.stderr, new RegExp(`sender ${escape(fingerprint(stranger.publicKey))} is not in`));
      assert.equal(await contentHash(u.dst), u.oldHash);

      // Read-only in authorized_keys: refused too.
      const ro = path.join(m.dir, "ro_keys");
      authorize(ro, m.sender, { options: "read-only" });
      const a3 = await apply(m, u.update, u.dst, ["--authorized-keys", ro]);
      assert.equal(a3.code, 5, a3.stderr);
      assert.match(a3.stderr, /read-only/);

      // The destination changed after its signature: the update is for an older state.
      const fd = fs.openSync(u.dst, "r+");
      fs.writeSync(fd, new Uint8Array(4096).fill(7), 0, 4096, 20 * MiB);
      fs.closeSync(fd);
      const changed = await contentHash(u.dst);
      const a4 = await apply(m, u.update, u.dst);
      assert.equal(a4.code, 3, a4.stderr);
      assert.match(a4.stderr, /not the state the update was made against/);
      assert.equal((json(a4).error as unknown as { code: string }).code, "mismatch");
      assert.equal(await contentHash(u.dst), changed, "the destination is untouched");
      assert.ok(!fs.existsSync(journalBeside(u.dst)));

      // diff: a signature whose key nobody vouched for, or not the one --to names.
      const [d1, d2] = await Promise.all([
        runCli(["diff", u.src, u.sig, "-o", path.join(m.dir, "x.ssync")], { config: m.srcConfig }),
        runCli(["diff", u.src, u.sig, "-o", path.join(m.dir, "y.ssync"), "--to", fingerprint(other.publicKey)], { config: m.srcConfig }),
      ]);
      assert.equal(d1.code, 5, d1.stderr);
      assert.match(d1.stderr, /not pinned/);
      assert.equal(d2.code, 5, d2.stderr);
      assert.ok(!fs.existsSync(path.join(m.dir, "x.ssync")) && !fs.existsSync(path.join(m.dir, "y.ssync")));
    });
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

describe("offline: kill -9 during apply", () => {
  test("before and after the commit point; apply again gives the same image", T, async () => {
    await withUpdate(async (m, u) => {
      const newHash = await contentHash(u.src);
      for (const point of ["journal-write:3", "apply:2"]) {
        const dst = path.join(m.dir, `crash-${point.replace(":", "-")}.img`);
        copySparse(u.dst, dst);
        const child = spawnCli(["apply", u.update, dst], { config: m.dstConfig, env: { SSYNC_TEST_CRASH: point } });
        const r = await finished(child, 60_000);
        assert.equal(r.signal, "SIGKILL", `${point}: the apply must die there: exit ${r.code}: ${r.stderr}`);
        assert.ok(fs.existsSync(journalBeside(dst)), `${point}: the journal is left`);
        if (point.startsWith("journal-write")) assert.equal(await contentHash(dst), u.oldHash, `${point}: before the commit point the destination is untouched`);
        const again = ok(await apply(m, u.update, dst), `${point}: apply again`);
        assert.equal(await contentHash(dst), newHash, `${point}: identical after the rerun`);
        assert.ok(!fs.existsSync(journalBeside(dst)), `${point}: no journal left`);
        if (point.startsWith("apply")) assert.equal(again.alreadyApplied, true, "recovery completed the committed apply");
        else assert.equal(again.alreadyApplied, false, "rolled back, then applied to the old state");
      }
    });
  });
});
