/**
 * The single binary, end to end: built by scripts/build-binary (or taken from SSYNC_BINARY),
 * copied to a folder with no node_modules and run there as a user would, on real sparse
 * files. Checks what hit the disk (bytes, allocation) and what the binary reports (--json).
 *
 * 1. Build (or take) the binary; copy it alone into an empty folder.
 * 2. --version, first copy, identical rerun, compressible data, the wasm zstd backend, a
 *    missing source.
 * 3. listen/push between two copies of the binary, when the CLI has those verbs.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { allocatedBytesOf, type DataChunk, fileHash, makeSparseFile } from "./helpers/sparse.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BUILD_TIMEOUT_MS = 180_000;
const RUN_TIMEOUT_MS = 60_000;

let work = "";
let bin = "";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the binary from the work folder with a clean environment plus `env`. */
function ssync(args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(bin, args, {
    cwd: work,
    encoding: "utf8",
    timeout: RUN_TIMEOUT_MS,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work, ...env },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ssyncJson(args: string[], env: Record<string, string> = {}): Record<string, number | string | boolean> {
  const r = ssync([...args, "--json"], env);
  assert.equal(r.code, 0, `ssync ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function assertSynced(src: string, dst: string): void {
  assert.equal(fs.statSync(dst).size, fs.statSync(src).size, "size");
  assert.equal(fileHash(dst), fileHash(src), "bytes");
  const slack = 64 * KiB;
  assert.ok(
    allocatedBytesOf(dst) <= allocatedBytesOf(src) + slack,
    `destination allocates ${allocatedBytesOf(dst)} bytes, source ${allocatedBytesOf(src)}`,
  );
}

/** Sum of the chunks' lengths. */
function dataBytes(chunks: DataChunk[]): number {
  return chunks.reduce((n, c) => n + c.length, 0);
}

describe("single binary", { timeout: BUILD_TIMEOUT_MS + 6 * RUN_TIMEOUT_MS }, () => {
  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "ssync-binary-"));
    const given = process.env.SSYNC_BINARY;
    let built = given ? path.resolve(given) : path.join(work, "build", "ssync");
    if (!given) {
      const r = spawnSync(path.join(ROOT, "scripts/build-binary"), ["--out", built], {
        cwd: ROOT,
        encoding: "utf8",
        timeout: BUILD_TIMEOUT_MS,
      });
      assert.equal(r.status, 0, `scripts/build-binary failed: ${r.error ?? ""}${r.stderr}`);
    }
    // Alone in a folder: nothing next to it to resolve modules or a .wasm from.
    bin = path.join(work, "bin", "ssync");
    fs.mkdirSync(path.dirname(bin));
    fs.copyFileSync(built, bin);
    fs.chmodSync(bin, 0o755);
    if (!given) fs.rmSync(path.dirname(built), { recursive: true, force: true });
    built = "";
    assert.deepEqual(fs.readdirSync(path.dirname(bin)), ["ssync"]);
  });

  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  test("--version", () => {
    const r = ssync(["--version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ssync\/\d+\.\d+\.\d+/);
    assert.equal(r.stderr, "");
  });

  test("first copy of a sparse image, then an identical rerun", () => {
    const src = path.join(work, "vm.img");
    const dst = path.join(work, "copy.img");
    // 256 MiB apparent, 5 MiB of data at scattered, block-aligned offsets; random and patterned.
    const chunks: DataChunk[] = [
      { offset: 0, length: 1 * MiB, fill: "random" },
      { offset: 37 * MiB, length: 2 * MiB },
      { offset: 128 * MiB + 64 * KiB, length: 1 * MiB, fill: "random" },
      { offset: 255 * MiB, length: 1 * MiB, seed: 3 },
    ];
    makeSparseFile(src, { size: 256 * MiB, chunks });
    const data = dataBytes(chunks);

    const first = ssyncJson(["sync", src, dst]);
    assertSynced(src, dst);
    assert.equal(first.ok, true);
    assert.equal(first.size, 256 * MiB);
    assert.equal(first.bytesWritten, data);
    // Holes were skipped, not read: SEEK_DATA through node:ffi works inside the binary.
    assert.equal(first.sourceBytesRead, data, "source bytes read (FFI SEEK_DATA in the binary)");

    const again = ssyncJson(["sync", src, dst]);
    assertSynced(src, dst);
    assert.equal(again.bytesWritten, 0);
    assert.equal(again.blocksSent, 0);
    assert.equal(again.holeBytesPunched, 0);
  });

  test("compressible data goes over the wire compressed", () => {
    const src = path.join(work, "text.img");
    const dst = path.join(work, "text-copy.img");
    const text = new TextEncoder().encode("ssync keeps sparse images identical. ".repeat(60_000));
    fs.writeFileSync(src, "");
    fs.truncateSync(src, 64 * MiB);
    const fd = fs.openSync(src, "r+");
    fs.writeSync(fd, text, 0, text.length, 8 * MiB);
    fs.closeSync(fd);

    const s = ssyncJson(["sync", src, dst]);
    assertSynced(src, dst);
    assert.ok(
      (s.dataBytesOnWire as number) < (s.dataBytesSent as number) / 4,
      `on the wire ${s.dataBytesOnWire} of ${s.dataBytesSent}`,
    );
  });

  test("the embedded zstd wasm backend (SSYNC_NO_NATIVE_ZSTD=1)", () => {
    const src = path.join(work, "text.img");
    const dst = path.join(work, "text-wasm.img");
    if (!fs.existsSync(src)) makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: MiB, fill: 7 }] });
    const s = ssyncJson(["sync", src, dst], { SSYNC_NO_NATIVE_ZSTD: "1" });
    assertSynced(src, dst);
    assert.ok((s.dataBytesOnWire as number) < (s.dataBytesSent as number), "compressed");
  });

  test("a missing source: exit code 1 and one line naming it", () => {
    const missing = path.join(work, "no-such.img");
    const r = ssync(["sync", missing, path.join(work, "never.img")]);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.ok(lines[0].includes(missing), lines[0]);
    assert.equal(r.stdout, "");
    assert.equal(fs.existsSync(path.join(work, "never.img")), false);
  });
});
