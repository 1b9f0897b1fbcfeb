/**
 * A source that changes during the sync is never reported identical (issue 8, scope 5).
 *
 * Each case runs the CLI as child processes (push and pull against a real `ssync listen` on
 * 127.0.0.1, and a local `ssync sync`) on real sparse files. The test hook
 * SSYNC_TEST_PAUSE_FILE (src/session/test-pause.ts) holds the source side after its first
 * range is read and its ops emitted; meanwhile the test rewrites the source: a block inside
 * the range already read, a block ahead of it, or a resize. Every case must exit 3 with the
 * advice, and the destination must still be the old image (sha256): the sync never commits.
 *
 * Block-device sources cannot be checked: the summary says so (text and --json).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { summarize, formatSummary } from "../src/cli/summary.ts";
import { exitCodeOf } from "../src/cli/exit-code.ts";
import { SourceWatch } from "../src/session/source-watch.ts";
import { openSource } from "../src/storage/open-source.ts";
import { SourceChangedError } from "../src/util/errors.ts";
import type { SyncReport } from "../src/session/client-session.ts";
import { SideStats } from "../src/engine/side-context.ts";
import { WireCounters } from "../src/session/wire-counters.ts";
import { type CliSetup, type CliSetupOptions, withCliSetup } from "./helpers/cli-setup.ts";
import { finished, runCli, spawnCli } from "./helpers/network.ts";
import { loopDeviceUnavailableReason, withLoopDevice } from "./helpers/loop-device.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { paused } from "./helpers/paused.ts";

const MiB = 1024 ** 2;
const SIZE = 64 * MiB;
/**
 * Data in [0, 36 MiB), a hole after it: more data ranges (1 MiB each) than a client keeps in
 * flight (32), so the first range the source reads is a data range that differs, whose
 * writes reach the destination during the pause (pull: a hole range's READ_DIFF would
 * otherwise arrive first, before the data ranges are digested).
 */
const DATA_END = 36 * MiB;
const CHUNKS = [{ offset: 0, length: DATA_END }];

type Mode = "push" | "pull" | "sync";
type Change = "inside" | "ahead" | "resize";

/** `read`: the range the source read before it paused (what the hook wrote in the pause file). */
const CHANGES: Record<Change, { what: string; apply: (file: string, read: { offset: number; length: number }) => void; expect: RegExp }> = {
  inside: {
    what: "a block inside the range already read",
    apply: (f, read) => writeAt(f, read.offset + read.length - 64 * 1024, 0x5a),
    expect: /\(modified\)/,
  },
  ahead: {
    what: "a block in a range not read yet",
    apply: (f, read) => writeAt(f, read.offset >= 8 * MiB ? 2 * MiB : 30 * MiB, 0x5b),
    expect: /\(modified\)/,
  },
  resize: { what: "a resize", apply: (f) => fs.truncateSync(f, SIZE + 8 * MiB), expect: new RegExp(`\\(size ${SIZE} → ${SIZE + 8 * MiB}\\)`) },
};

function writeAt(file: string, offset: number, fill: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, new Uint8Array(64 * 1024).fill(fill), 0, 64 * 1024, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** Where the pause hook writes the range it paused after, in the setup's folder `dir`. */
const pauseFileOf = (dir: string): string => path.join(dir, "paused");

/** A client key made in this process and authorized; the listener pauses its pull sources. */
const SETUP: CliSetupOptions = { keygen: false, env: (dir) => ({ SSYNC_TEST_PAUSE_FILE: pauseFileOf(dir) }) };

/**
 * Runs one sync of `mode` with the pause hook; during the pause applies `change` (if any) to
 * the source. Returns the CLI's result and the paths.
 */
async function syncWithChange(s: CliSetup, mode: Mode, change: Change | undefined) {
  const { remote } = s;
  const pauseFile = pauseFileOf(s.dir);
  // The source is new (seed 2), the destination holds the old image (seed 1): every data block differs.
  const src = mode === "pull" ? path.join(s.root, "vm.img") : path.join(s.dir, "src.img");
  const dst = mode === "push" ? path.join(s.root, "vm.img") : path.join(s.dir, "dst.img");
  makeSparseFile(src, { size: SIZE, chunks: CHUNKS.map((c) => ({ ...c, seed: 2 })) });
  makeSparseFile(dst, { size: SIZE, chunks: CHUNKS.map((c) => ({ ...c, seed: 1 })) });
  const oldImage = fileHash(dst);
  const args = mode === "push"
    ? ["push", "--accept-new", "--json", src, `${remote}:vm.img`]
    : mode === "pull"
    ? ["pull", "--accept-new", "--json", `${remote}:vm.img`, dst]
    : ["sync", "--json", src, dst];
  // Only the source side pauses: the client for push and sync, the listener for pull.
  const child = spawnCli(args, { config: s.client, env: { SSYNC_TEST_PAUSE_FILE: pauseFile } });
  const result = finished(child, 60_000);
  result.catch(() => {}); // awaited below
  const didPause = await paused(pauseFile, child, 30_000);
  if (didPause) {
    // Time for the first range's writes to land (in place, before the journal; in the journal after).
    await new Promise((r) => setTimeout(r, 300));
    const [offset, length] = fs.readFileSync(pauseFile, "utf8").trim().split(" ").map(Number);
    assert.ok(length > 0 && offset + length <= DATA_END, `paused after [${offset}, +${length}), not a data range`);
    if (change) CHANGES[change].apply(src, { offset, length });
    fs.rmSync(pauseFile);
  }
  const r = await result;
  return { r, didPause, src, dst, oldImage };
}

describe("a source that changes during the sync", () => {
  for (const mode of ["push", "sync", "pull"] as const) {
    test(`${mode}: an unchanged source paused after its first range still syncs (the hook's control)`, { timeout: 90_000 }, async () => {
      await withCliSetup(SETUP, async (s) => {
        const { r, didPause, src, dst } = await syncWithChange(s, mode, undefined);
        assert.ok(didPause, `the ${mode} never paused: exit ${r.code}, ${r.stdout} ${r.stderr}`);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /"sourceKind":"file"/);
        assert.equal(fileHash(dst), fileHash(src));
      });
    });

    for (const change of ["inside", "ahead", "resize"] as const) {
      test(`${mode}: ${CHANGES[change].what} during the sync exits 3 and leaves the old image`, { timeout: 90_000 }, async () => {
        await withCliSetup(SETUP, async (s) => {
          const { r, didPause, dst, oldImage } = await syncWithChange(s, mode, change);
          assert.ok(didPause, `the ${mode} never paused: exit ${r.code}, ${r.stdout} ${r.stderr}`);
          assert.equal(r.code, 3, `exit ${r.code}; stdout ${r.stdout}; stderr ${r.stderr}`);
          assert.match(r.stderr, /the source changed during the sync/);
          assert.match(r.stderr, CHANGES[change].expect);
          assert.match(r.stderr, /snapshot the source or stop its writer, then rerun/);
          if (mode === "pull") assert.match(r.stderr, /ssync: remote: /);
          assert.doesNotMatch(r.stdout, /identical/);
          // The sync never committed: with the journal (issue 8) the destination is untouched.
          assert.equal(fileHash(dst), oldImage, "the destination is no longer the old image");
        });
      });
    }
  }
});

describe("SourceWatch", () => {
  test("a file's size, mtime and ctime through its own descriptor: changes throw, a new file at its name does not", { timeout: 30_000 }, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "src.img");
      makeSparseFile(file, { size: 4 * MiB, chunks: [{ offset: 0, length: MiB }] });
      await using store = await openSource(file);
      // Moved before the first stamp (a rename changes the file's ctime); another file put
      // at the name: the watch follows the open file, never the name.
      fs.renameSync(file, path.join(dir, "moved.img"));
      const watch = await SourceWatch.start(store);
      assert.ok(watch);
      makeSparseFile(file, { size: 8 * MiB });
      await watch.check(); // unchanged
      // Under Deno mtime has ms precision: a write in the very millisecond of the last one is not seen.
      await new Promise((r) => setTimeout(r, 5));
      writeAt(path.join(dir, "moved.img"), 2 * MiB, 1);
      const e = await watch.check().then(() => undefined, (e) => e);
      assert.ok(e instanceof SourceChangedError, String(e));
      assert.equal(e.code, "ESTALE");
      assert.equal(exitCodeOf(e), 3);
      assert.match(e.message, /^Cannot sync .*src\.img: the source changed during the sync \(modified\): snapshot the source or stop its writer, then rerun$/);
      fs.truncateSync(path.join(dir, "moved.img"), 3 * MiB);
      await assert.rejects(watch.check(), new RegExp(`\\(size ${4 * MiB} → ${3 * MiB}\\)`));
      // A file no longer the size it was opened with fails at the start.
      await assert.rejects(SourceWatch.start(store), new RegExp(`\\(size ${4 * MiB} → ${3 * MiB}\\)`));
    });
  });
});

function report(mode: "push" | "pull", localKind: SyncReport["localKind"], remoteKind: SyncReport["remoteKind"]): SyncReport {
  return {
    mode,
    size: SIZE,
    blockSize: 65536,
    hash: "hmac-sha256",
    dryRun: false,
    localKind,
    remoteKind,
    remoteSizeBefore: SIZE,
    destinationSizeBefore: SIZE,
    local: new SideStats(),
    remote: { bytesRead: 0, holeBytesSkipped: 0, bytesWritten: 0, bytesPunched: 0 },
    wire: new WireCounters(),
    root: "00".repeat(16),
    seconds: 1,
  };
}

describe("a block-device source cannot be checked", () => {
  test("the summary says so and recommends a snapshot: push of a local device, pull of a remote one", () => {
    const names = { mode: "push" as const, source: "a", destination: "b", verified: false };
    const push = summarize(report("push", "block-device", "file"), names);
    assert.equal(push.sourceKind, "block-device");
    assert.equal(push.warnings.length, 1);
    assert.match(push.warnings[0], /source is a block device: changes during the sync cannot be detected; sync from a snapshot/);
    assert.match(formatSummary(push), /\n {2}warning {3}source is a block device: .*lvcreate --snapshot/);
    // Pull: the source is the listener's; its kind comes from OPEN_OK.
    const pull = summarize(report("pull", "file", "block-device"), { ...names, mode: "pull" });
    assert.equal(pull.sourceKind, "block-device");
    assert.equal(pull.warnings.length, 1);
    // A file source is checked: no warning; a block-device destination does not matter.
    const file = summarize(report("pull", "block-device", "file"), { ...names, mode: "pull" });
    assert.equal(file.sourceKind, "file");
    assert.deepEqual(file.warnings, []);
    assert.doesNotMatch(formatSummary(file), /warning/);
  });

  const noLoop = loopDeviceUnavailableReason();
  test("ssync sync from a loop device: the summary warns, in text and --json", { timeout: 60_000, skip: noLoop || false }, async () => {
    await withTempDir(async (dir) => {
      const backing = path.join(dir, "backing.img");
      makeSparseFile(backing, { size: 16 * MiB, chunks: [{ offset: 0, length: 2 * MiB }] });
      const ran = await withLoopDevice(backing, async (device) => {
        {
          await using store = await openSource(device);
          assert.equal(await SourceWatch.start(store), undefined, "a block device is not watched");
        }
        const json = await runCli(["sync", "--json", device, path.join(dir, "a.img")], { config: dir });
        assert.equal(json.code, 0, json.stderr);
        const s = JSON.parse(json.stdout.trim().split("\n").pop()!);
        assert.equal(s.sourceKind, "block-device");
        assert.match(s.warnings[0], /changes during the sync cannot be detected/);
        const text = await runCli(["sync", device, path.join(dir, "b.img")], { config: dir });
        assert.equal(text.code, 0, text.stderr);
        assert.match(text.stdout, /warning {3}source is a block device: changes during the sync cannot be detected; sync from a snapshot/);
        return true;
      });
      if (ran === null) return; // losetup failed here: nothing to check
      assert.equal(fileHash(path.join(dir, "a.img")), fileHash(backing));
    });
  });
});
