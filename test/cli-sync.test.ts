/**
 * `ssync sync` through the real CLI (scripts/ssync as a child process): clear one-line errors
 * with non-zero exits and an untouched destination; --dry-run; --verify against corruption.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { runSyncCommand } from "../src/cli/sync-command.ts";
import { exitCodeOf } from "../src/cli/exit-code.ts";
import { MismatchError } from "../src/util/errors.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { loopDeviceUnavailableReason, withLoopDevice } from "./helpers/loop-device.ts";
import { NOBODY, nobodyUnavailableReason } from "./helpers/as-nobody.ts";

const ssync = new URL("../scripts/ssync", import.meta.url).pathname;
const MiB = 1 << 20;

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(ssync, args, { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function assertOneLineError(r: { status: number | null; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.status, 0);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line, got: ${r.stderr}`);
  assert.match(lines[0], pattern);
}

describe("ssync sync errors lose nothing", { timeout: 120_000 }, () => {
  test("missing source: names the path, exit 1, destination not created", async () => {
    await withTempDir((dir) => {
      const dst = path.join(dir, "dst.img");
      const r = cli(["sync", path.join(dir, "nope.img"), dst]);
      assert.equal(r.status, 1);
      assertOneLineError(r, /Cannot open .*nope\.img: no such file/);
      assert.equal(fs.existsSync(dst), false);
    });
  });

  test("missing destination directory, destination a directory: source and directory untouched", async () => {
    await withTempDir((dir) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: MiB, length: MiB }] });
      const r1 = cli(["sync", src, path.join(dir, "no-such-dir", "dst.img")]);
      assertOneLineError(r1, /no-such-dir.*does not exist/);
      fs.mkdirSync(path.join(dir, "d"));
      const r2 = cli(["sync", src, path.join(dir, "d")]);
      assertOneLineError(r2, /d.*is a directory/);
      assert.deepEqual(fs.readdirSync(path.join(dir, "d")), []);
    });
  });

  test("unreadable source (as an unprivileged user)", { skip: nobodyUnavailableReason() || false }, async () => {
    await withTempDir((dir) => {
      const src = path.join(dir, "src.img");
      fs.writeFileSync(src, "secret", { mode: 0o600 });
      fs.chmodSync(dir, 0o777);
      const dst = path.join(dir, "dst.img");
      const who = spawnSync(ssync, ["sync", src, dst], { uid: NOBODY, gid: NOBODY, encoding: "utf8", timeout: 60_000, env: { PATH: process.env.PATH, HOME: dir, DENO_DIR: path.join(dir, "deno-cache") } });
      assertOneLineError(who, /Cannot open .*src\.img: permission denied/);
      assert.equal(fs.existsSync(dst), false);
    });
  });

  test("block device smaller than the source is refused, device untouched", async (t) => {
    const why = loopDeviceUnavailableReason();
    if (why) return t.skip(why);
    await withTempDir(async (dir) => {
      const backing = path.join(dir, "backing.img");
      makeSparseFile(backing, { size: 4 * MiB, chunks: [{ offset: 0, length: 4 * MiB, seed: 3 }] });
      const before = fileHash(backing);
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 8 * MiB, chunks: [{ offset: 0, length: MiB }] });
      const ran = await withLoopDevice(backing, (dev) => {
        const r = cli(["sync", src, dev]);
        assertOneLineError(r, /block device of 4194304 bytes, smaller than the source \(8388608 bytes\)/);
        return true;
      });
      if (ran === null) return t.skip("losetup failed here");
      assert.equal(fileHash(backing), before);
    });
  });
});

describe("--dry-run and --verify", { timeout: 120_000 }, () => {
  test("--dry-run reports the changes and leaves bytes and mtime untouched", async () => {
    await withTempDir((dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 2 * MiB }] });
      makeSparseFile(dst, { size: 20 * MiB, chunks: [{ offset: MiB, length: 2 * MiB, seed: 8 }] });
      fs.utimesSync(dst, new Date(1_000_000_000_000), new Date(1_000_000_000_000));
      const before = { hash: fileHash(dst), mtime: fs.statSync(dst).mtimeMs, size: fs.statSync(dst).size };
      const r = cli(["sync", "--dry-run", "--json", src, dst]);
      assert.equal(r.status, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      assert.equal(s.dryRun, true);
      assert.ok(s.blocksSent >= 16, "reports the differing blocks");
      assert.ok(s.zeroBytesSent >= MiB, "reports the blocks to zero");
      assert.equal(s.bytesWritten, 0);
      assert.deepEqual({ hash: fileHash(dst), mtime: fs.statSync(dst).mtimeMs, size: fs.statSync(dst).size }, before);
      const missing = path.join(dir, "missing.img");
      assert.match(cli(["sync", "--dry-run", src, missing]).stdout, /^Dry run: .*: compared \(/);
      assert.equal(fs.existsSync(missing), false, "a dry run creates nothing");
      // The headline says whether this run changed the destination.
      assert.match(cli(["sync", src, dst]).stdout, /dst\.img: now identical \(16\.0 MiB, root [0-9a-f]{16}\)/);
      assert.match(cli(["sync", src, dst]).stdout, /dst\.img: already identical \(/);
    });
  });

  test("--verify fails loudly when the destination is corrupted behind the engine's back", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 32 * MiB, chunks: [{ offset: 3 * MiB, length: 5 * MiB }] });
      const ok = await runSyncCommand(src, dst, { verify: true });
      assert.equal(ok.verified, true);
      const corrupt = () => {
        const fd = fs.openSync(dst, "r+");
        fs.writeSync(fd, new Uint8Array([42]), 0, 1, 20 * MiB + 5);
        fs.closeSync(fd);
      };
      await assert.rejects(runSyncCommand(src, dst, { verify: true }, { beforeVerify: corrupt }), (e) => {
        assert.ok(e instanceof MismatchError);
        assert.match((e as Error).message, /Verify failed: .*dst\.img differs/);
        assert.equal(exitCodeOf(e), 3);
        return true;
      });
    });
  });
});
