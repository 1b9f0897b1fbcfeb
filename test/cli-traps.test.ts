/**
 * No silent traps (issue 10, scope 2): each one a user fell into, through the CLI (scripts/ssync
 * as child processes), real files and a real `ssync listen` on 127.0.0.1.
 *
 * 1. A mistyped port (127.0.0.1:7O71) is a usage error, never the file "7O71" at port 7070.
 * 2. `sync` refuses an argument that reads as a remote (host:7071:x), push and pull a LOCAL
 *    that does; ./NAME names a local file with a colon.
 * 3. No new file in /dev (devtmpfs), /proc or /sys: a mistyped device is an error naming it.
 * 4. A failed run leaves no file it created and never wrote (pull, push, sync; --inplace).
 * 5. Size changes are reported (dry run and summary); a shrink that would drop data needs
 *    --allow-shrink (push: OPEN_ALLOW_SHRINK at the listener; pull and sync: locally).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { openForClient } from "../src/listener/open-for-client.ts";
import { type CliSetup, type CliSetupOptions, withCliSetup } from "./helpers/cli-setup.ts";
import { finished, runCli, spawnCli, waitFor } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { paused } from "./helpers/paused.ts";

const MiB = 1024 ** 2;
const T = { timeout: 120_000 };
/** A client key made in this process; the listener's host key pinned by a first push. */
const SETUP: CliSetupOptions = { keygen: false, pinHostKey: true };

function json(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

/** Names in `dir` other than the set-up's own. */
function entries(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n !== "first.img").sort();
}

/** A name in /dev that surely does not exist; removed afterwards with its work files, whatever happens. */
async function withMissingDevice(body: (device: string) => Promise<void>): Promise<void> {
  const name = `ssync-test-does-not-exist-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const device = `/dev/${name}`;
  const leftovers = [device, `/dev/.${name}.ssync-partial`, `/dev/.${name}.ssync-journal`, `/dev/.${name}.ssync-partial.ssync-lock`];
  try {
    assert.ok(!fs.existsSync(device));
    await body(device);
  } finally {
    const left = leftovers.filter((f) => fs.existsSync(f));
    for (const f of left) fs.rmSync(f, { force: true });
    assert.deepEqual(left, [], "left in /dev");
  }
}

describe("1, 2: one remote syntax; local arguments never read as remotes", () => {
  test("a mistyped port is a usage error with the spellings meant; HOST:PORT:PATH and the swapped order", T, async () => {
    await withCliSetup(SETUP, async ({ dir, client, root, remote }) => {
      const src = path.join(dir, "f.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 64 * 1024 }] });
      // The trap: this pushed to a file named 7O71 through port 7070 and exited 0.
      let r = await runCli(["push", src, "127.0.0.1:7O71"], { config: client });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /"7O71" is not a port \(digits only; did you mean 7071\?\)/);
      assert.match(r.stderr, /127\.0\.0\.1::7O71/);
      assert.match(r.stderr, /127\.0\.0\.1:7070:7O71/);
      r = await runCli(["push", src, "127.0.0.1:7l71:f.img"], { config: client });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /"7l71" is not a port.*did you mean 7171\?.*write 127\.0\.0\.1::7l71:f\.img/);
      assert.deepEqual(entries(root), [], "nothing reached the listener");

      // With the port written, the path may be anything, 7O71 included.
      r = await runCli(["push", src, `${remote}:7O71`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(entries(root), ["7O71"]);
      assert.equal(fileHash(path.join(root, "7O71")), fileHash(src));

      // Arguments in the other verb's order.
      r = await runCli(["push", `${remote}:7O71`, path.join(dir, "back.img")], { config: client });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /reads as a remote.*ssync pull/);
      r = await runCli(["pull", path.join(dir, "back.img"), `${remote}:7O71`], { config: client });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /reads as a remote.*ssync push/);
      r = await runCli(["pull", remote, path.join(dir, "back.img")], { config: client });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /name the file, as HOST:PORT:PATH or HOST:PATH/);
      assert.ok(!fs.existsSync(path.join(dir, "back.img")));

      const help = await runCli(["push", "--help"], { config: client });
      assert.match(help.stdout, /HOST::PATH names any path/);
    });
  });

  test("sync refuses a source or destination that reads as a remote; ./NAME is a local file with a colon", T, async () => {
    await withTempDir(async (dir) => {
      makeSparseFile(path.join(dir, "x"), { size: MiB, chunks: [{ offset: 0, length: 4096 }] });
      // The trap: this made a local file literally named host:7071:x.
      let r = await runCli(["sync", "x", "host:7071:x"], { config: dir, cwd: dir });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /Invalid destination "host:7071:x": it reads as a remote/);
      assert.match(r.stderr, /ssync push x host:7071:x/);
      assert.match(r.stderr, /\.\/host:7071:x/);
      r = await runCli(["sync", "backup::x", "y"], { config: dir, cwd: dir });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /Invalid source "backup::x".*ssync pull backup::x y/);
      assert.deepEqual(fs.readdirSync(dir).sort(), ["x"]);

      r = await runCli(["sync", "x", "./host:7071:x"], { config: dir, cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(path.join(dir, "host:7071:x")), fileHash(path.join(dir, "x")));
    });
  });
});

describe("3: no new file in /dev, /proc or /sys", () => {
  test("sync and pull to a device that does not exist fail naming it; nothing is created there", T, async () => {
    await withCliSetup(SETUP, async ({ dir, client, remote }) => {
      const img = path.join(dir, "first.img");
      await withMissingDevice(async (device) => {
        for (const extra of [[], ["--inplace"]]) {
          const r = await runCli(["sync", ...extra, img, device], { config: client });
          assert.equal(r.code, 1, r.stderr);
          assert.match(r.stderr, new RegExp(`Cannot create ${device}: it looks like a device that does not exist`));
          assert.doesNotMatch(r.stderr, /remote:/, "a local sync's refusal is no remote's");
          assert.ok(!fs.existsSync(device));
        }
        // The listener's first.img, pulled to the mistyped device.
        const r = await runCli(["pull", `${remote}:first.img`, device], { config: client });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, new RegExp(`Cannot create ${device}: it looks like a device that does not exist`));
      });
      for (const where of ["/proc", "/sys"]) {
        const target = `${where}/ssync-test-does-not-exist-${process.pid}`;
        const r = await runCli(["sync", img, target], { config: client });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, new RegExp(`Cannot create ${target}: ${where} is a kernel filesystem`));
      }
    });
  });

  test("a listener whose root is a kernel filesystem creates no file there", T, async () => {
    await withMissingDevice(async (device) => {
      const policy = { root: "/dev", exports: new Map(), listenerReadOnly: false, keyReadOnly: false, pathPrefix: null };
      for (const inplace of [false, true]) {
        await assert.rejects(
          openForClient({ name: path.basename(device), mode: "push", dryRun: false, inplace }, policy),
          (e: Error & { code?: string }) => e.code === "EACCES" && /a kernel filesystem, where the listener never creates a file/.test(e.message),
        );
      }
    });
  });
});

/**
 * Runs `args` with the pause hook (test-pause.ts) holding the source side after its first
 * range, resizes `src` meanwhile, and returns the result: the sync fails before COMMIT (exit 3).
 */
async function failAfterOpen(s: CliSetup, args: string[], src: string) {
  const pauseFile = path.join(s.dir, "paused");
  const child = spawnCli(args, { config: s.client, env: { SSYNC_TEST_PAUSE_FILE: pauseFile } });
  const result = finished(child, 60_000);
  result.catch(() => {}); // awaited below
  const didPause = await paused(pauseFile, child, 30_000);
  if (didPause) {
    fs.truncateSync(src, 16 * MiB);
    fs.rmSync(pauseFile);
  }
  const r = await result;
  assert.ok(didPause, `never paused: exit ${r.code}, ${r.stderr}`);
  return r;
}

describe("4: a failed run leaves no file it created and never wrote", () => {
  test("pull --inplace of a missing remote file; push and sync --inplace that fail after OPEN", T, async () => {
    await withCliSetup(SETUP, async (s) => {
      const { dir, client, root, remote } = s;
      // The trap: this left a 0-byte local file.
      for (const extra of [[], ["--inplace"]]) {
        const r = await runCli(["pull", ...extra, `${remote}:missing.img`, path.join(dir, "local.img")], { config: client });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /Cannot open missing\.img: no such file/);
        assert.deepEqual(fs.readdirSync(dir).filter((n) => n.includes("local.img")), [], `${extra}: left behind`);
      }
      // A source of holes only: the first range writes nothing; the resize during the pause
      // fails the sync before COMMIT, with the new destination created (in place) and empty.
      const src = path.join(dir, "holes.img");
      makeSparseFile(src, { size: 8 * MiB });
      let r = await failAfterOpen(s, ["push", "--inplace", src, `${remote}:new.img`], src);
      assert.equal(r.code, 3, r.stderr);
      // The listener disposes the session's store once it sees the client go.
      await waitFor(() => entries(root).length === 0, { timeoutMs: 10_000, what: `the listener to remove new.img (root: ${entries(root)})` });
      makeSparseFile(src, { size: 8 * MiB });
      const dst = path.join(dir, "new.img");
      r = await failAfterOpen(s, ["sync", "--inplace", src, dst], src);
      assert.equal(r.code, 3, r.stderr);
      assert.ok(!fs.existsSync(dst), "the sync kept what it created");
    });
  });
});

describe("5: size changes are reported; a shrink that drops data needs --allow-shrink", () => {
  const LARGE = 8 * MiB;
  const SMALL = 4 * MiB;
  /** Data on both sides of SMALL: shrinking to SMALL drops [SMALL, LARGE). */
  const largeWithTail = (file: string) =>
    makeSparseFile(file, { size: LARGE, chunks: [{ offset: 0, length: MiB, seed: 3 }, { offset: 6 * MiB, length: MiB, seed: 3 }] });
  const small = (file: string) => makeSparseFile(file, { size: SMALL, chunks: [{ offset: 0, length: MiB, seed: 4 }] });

  /** Refused without the flag (dry run too), allowed with it; the summaries report both sizes. */
  async function shrinkCase(o: { args: (extra: string[]) => string[]; client: string; src: string; dst: string; what: string }) {
    const before = fileHash(o.dst);
    for (const extra of [[], ["--dry-run"]]) {
      const r = await runCli(o.args(extra), { config: o.client });
      assert.equal(r.code, 1, `${o.what} ${extra}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`Cannot shrink \\S+ from ${LARGE} to ${SMALL} bytes.*holds data past the new end \\(at byte ${6 * MiB}\\).*--allow-shrink`));
      assert.equal(fileHash(o.dst), before, `${o.what} ${extra}: the destination changed`);
      assert.equal(fs.statSync(o.dst).size, LARGE);
    }
    let r = await runCli(o.args(["--dry-run", "--allow-shrink", "--json"]), { config: o.client });
    assert.equal(r.code, 0, r.stderr);
    let j = json(r.stdout);
    assert.equal(j.destinationSizeBefore, LARGE);
    assert.equal(j.size, SMALL);
    assert.equal(fileHash(o.dst), before);
    r = await runCli(o.args(["--allow-shrink"]), { config: o.client });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /size {6}destination shrank from 8\.0 MiB to 4\.0 MiB/);
    assert.equal(fileHash(o.dst), fileHash(o.src));
    // Growing needs nothing and is reported: in a dry run, and in the summary.
    largeWithTail(o.src);
    r = await runCli(o.args(["--dry-run"]), { config: o.client });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /size {6}destination would grow from 4\.0 MiB to 8\.0 MiB/);
    r = await runCli(o.args(["--json"]), { config: o.client });
    assert.equal(r.code, 0, r.stderr);
    j = json(r.stdout);
    assert.equal(j.destinationSizeBefore, SMALL);
    assert.equal(j.size, LARGE);
    assert.equal(fileHash(o.dst), fileHash(o.src));
  }

  test("push (the listener refuses, OPEN_ALLOW_SHRINK), pull and sync (locally)", T, async () => {
    await withCliSetup(SETUP, async ({ dir, client, root, remote }) => {
      const local = path.join(dir, "local.img");
      const served = path.join(root, "vm.img");
      largeWithTail(served);
      small(local);
      await shrinkCase({ what: "push", args: (x) => ["push", ...x, local, `${remote}:vm.img`], client, src: local, dst: served });
      largeWithTail(local);
      small(served);
      await shrinkCase({ what: "pull", args: (x) => ["pull", ...x, `${remote}:vm.img`, local], client, src: served, dst: local });
      const dst = path.join(dir, "copy.img");
      largeWithTail(dst);
      small(local);
      await shrinkCase({ what: "sync", args: (x) => ["sync", ...x, local, dst], client, src: local, dst });
    });
  });

  test("a destination whose part past the new end is all holes shrinks without the flag, reported", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      small(src);
      makeSparseFile(dst, { size: LARGE, chunks: [{ offset: 0, length: MiB, seed: 4 }] });
      const r = await runCli(["sync", "--json", src, dst], { config: dir });
      assert.equal(r.code, 0, r.stderr);
      const j = json(r.stdout);
      assert.equal(j.destinationSizeBefore, LARGE);
      assert.equal(j.size, SMALL);
      assert.equal(fileHash(dst), fileHash(src));
    });
  });
});
