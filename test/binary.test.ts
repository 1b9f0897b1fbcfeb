/**
 * The single binary, end to end: built by scripts/build-binary (or taken from SSYNC_BINARY),
 * copied to a folder with no node_modules and run there as a user would, on real sparse
 * files. Checks what hit the disk (bytes, allocation) and what the binary reports (--json).
 *
 * 1. Build (or take) the binary; copy it alone into an empty folder.
 * 2. --version, first copy, identical rerun, compressible data, the wasm zstd backend, a
 *    missing source.
 * 3. keygen, listen, push and pull between two copies of the binary.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
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
    env: { ...cleanEnv(), ...env },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the binary without blocking this process (a listener child must keep serving). */
function ssyncAsync(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(bin, args, {
    cwd: work,
    env: { ...cleanEnv(), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c) => (stdout += c));
  child.stderr.on("data", (c) => (stderr += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ssync ${args.join(" ")} timed out; stderr: ${stderr}`));
    }, RUN_TIMEOUT_MS);
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `ssync listen --bind 127.0.0.1:0 ARGS` from the binary; resolves with its port once it says so. */
function startListener(
  args: string[],
  env: Record<string, string>,
): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(bin, ["listen", "--bind", "127.0.0.1:0", ...args], {
    cwd: work,
    env: { ...cleanEnv(), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (c) => (err += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ssync listen did not start; stderr: ${err}`));
    }, 20_000);
    const onClose = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`ssync listen exited with ${code}: ${err}`));
    };
    child.once("close", onClose);
    child.stdout.on("data", (c) => {
      out += c;
      const m = /^ssync listening on 127\.0\.0\.1:(\d+) /m.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.off("close", onClose);
      resolve({ child, port: Number(m[1]), stderr: () => err });
    });
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const closed = new Promise((r) => child.once("close", r));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 5000);
  await closed;
  clearTimeout(t);
}

function cleanEnv(): Record<string, string> {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: work };
}

function ssyncJson(
  args: string[],
  env: Record<string, string> = {},
): Record<string, number | string | boolean> {
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
    // The commit is the one it was built from (scripts/build-binary embeds it).
    assert.match(r.stdout, /^ssync \d+\.\d+\.\d+ \(node 26\.\d+\.\d+ \(single binary\), commit ([0-9a-f]{12}(-dirty)?|unknown)\)\n$/);
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

    // A local sync compresses only when told to (its pair is memory, never the bottleneck).
    const s = ssyncJson(["sync", "--compress=always", src, dst]);
    assertSynced(src, dst);
    assert.ok(
      (s.dataBytesOnWire as number) < (s.dataBytesSent as number) / 4,
      `on the wire ${s.dataBytesOnWire} of ${s.dataBytesSent}`,
    );
  });

  test("the embedded zstd wasm backend (SSYNC_NO_NATIVE_ZSTD=1)", () => {
    const src = path.join(work, "text.img");
    const dst = path.join(work, "text-wasm.img");
    if (!fs.existsSync(src)) {
      makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: MiB, fill: 7 }] });
    }
    const s = ssyncJson(["sync", "--compress=always", src, dst], { SSYNC_NO_NATIVE_ZSTD: "1" });
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

  test("keygen, listen, push and pull between two copies of the binary", async () => {
    const client = { XDG_CONFIG_HOME: path.join(work, "client-config") };
    const server = { XDG_CONFIG_HOME: path.join(work, "server-config") };
    const root = path.join(work, "served");
    fs.mkdirSync(root);
    fs.mkdirSync(path.join(server.XDG_CONFIG_HOME, "ssync"), { recursive: true });
    const keygen = await ssyncAsync(["keygen"], client);
    assert.equal(keygen.code, 0, keygen.stderr);
    fs.copyFileSync(
      path.join(client.XDG_CONFIG_HOME, "ssync", "id_ssync.pub"),
      path.join(server.XDG_CONFIG_HOME, "ssync", "authorized_keys"),
    );
    // The listener runs from a second copy of the binary, as on another machine.
    const serverBin = path.join(work, "server-bin", "ssync");
    fs.mkdirSync(path.dirname(serverBin));
    fs.copyFileSync(bin, serverBin);
    fs.chmodSync(serverBin, 0o755);
    const clientBin = bin;
    bin = serverBin;
    const listener = await startListener(["--root", root], server).finally(() => (bin = clientBin));
    try {
      const src = path.join(work, "net.img");
      const chunks: DataChunk[] = [
        { offset: 0, length: MiB },
        { offset: 300 * MiB, length: 2 * MiB, fill: "random" },
        { offset: 1023 * MiB, length: MiB, fill: 0x5a },
      ];
      makeSparseFile(src, { size: 1024 * MiB, chunks });
      const remote = `127.0.0.1:${listener.port}`;

      const push = await ssyncAsync(["push", "--accept-new", "--json", src, remote], client);
      assert.equal(push.code, 0, push.stderr);
      const s = JSON.parse(push.stdout.trim().split("\n").pop()!);
      assert.equal(s.bytesWritten, dataBytes(chunks));
      assertSynced(src, path.join(root, "net.img"));

      const back = path.join(work, "net-back.img");
      const pull = await ssyncAsync(["pull", "--json", `${remote}:net.img`, back], client);
      assert.equal(pull.code, 0, pull.stderr);
      assertSynced(src, back);
      assert.match(listener.stderr(), /push "net\.img".*: ok/);
      assert.match(listener.stderr(), /pull "net\.img".*: ok/);

      // A folder, both ways, over one batch each (protocol 2 on the binary's Node runtime).
      const tree = path.join(work, "tree");
      fs.mkdirSync(path.join(tree, "sub"), { recursive: true });
      makeSparseFile(path.join(tree, "a.img"), { size: 8 * MiB, chunks: [{ offset: MiB, length: MiB, fill: "random" }] });
      makeSparseFile(path.join(tree, "sub/b.img"), { size: MiB, chunks: [{ offset: 0, length: 4096 }] });
      const folderPush = await ssyncAsync(["push", "--json", `${tree}/`, `${remote}:tree/`], client);
      assert.equal(folderPush.code, 0, folderPush.stderr);
      assert.equal(JSON.parse(folderPush.stdout.trim().split("\n").pop()!).counts.synced, 2);
      const treeBack = path.join(work, "tree-back");
      const folderPull = await ssyncAsync(["pull", "--json", `${remote}:tree/`, `${treeBack}/`], client);
      assert.equal(folderPull.code, 0, folderPull.stderr);
      for (const p of ["a.img", "sub/b.img"]) {
        assertSynced(path.join(tree, p), path.join(root, "tree", p));
        assertSynced(path.join(tree, p), path.join(treeBack, p));
      }
      assert.match(listener.stderr(), /batch of \d+ slots: 2 files \(2 committed/);
    } finally {
      await stop(listener.child);
    }
  });
});
