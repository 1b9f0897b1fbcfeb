/**
 * `ssync sync SRC/ DST/` (issue 11, the local part), through the real CLI: a tree of 20
 * sparse files synced, changed, synced again; the quick check, --delete, --exclude, links,
 * fifos and a symlinked folder that leads outside; a file that fails alone.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { NOBODY, nobodyUnavailableReason } from "./helpers/as-nobody.ts";
import { finished, runCli, spawnCli, SSYNC } from "./helpers/network.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const KiB = 1024;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

interface FileRow {
  path: string;
  outcome: string;
  size: number;
  sourceBytesRead: number;
  destinationBytesRead: number;
  dataBytesSent: number;
  error?: { code: string; exitCode: number };
}

async function sync(dir: string, args: string[]): Promise<{ code: number | null; o: Record<string, unknown>; files: Map<string, FileRow>; stderr: string }> {
  const r = await runCli(["sync", "--json", ...args], { config: path.join(dir, "config"), timeoutMs: 120_000 });
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `one JSON object; stdout ${r.stdout}; stderr ${r.stderr}`);
  const o = JSON.parse(lines[0]);
  return { code: r.code, o, files: new Map((o.files as FileRow[]).map((f) => [f.path, f])), stderr: r.stderr };
}

/** The tree: [path, apparent size, data chunks at offsets (1 MiB each unless said)]. */
const TREE: [string, number, number[]][] = [
  ["empty.img", 0, []],
  ["small.img", 4 * KiB, [0]],
  ["big.img", 3 * GiB, [0, 1 * GiB, 3 * GiB - MiB]],
  ["holes.img", 1 * GiB, []],
  ["a/one.img", 64 * MiB, [0, 32 * MiB]],
  ["a/two.img", 64 * MiB, [8 * MiB]],
  ["a/three.img", 16 * MiB, [0]],
  ["a/b/deep1.img", 256 * MiB, [128 * MiB]],
  ["a/b/deep2.img", 8 * MiB, [0, 4 * MiB]],
  ["a/b/deep3.img", 2 * MiB, [0]],
  ["c/c1.img", 32 * MiB, [16 * MiB]],
  ["c/c2.img", 32 * MiB, [0]],
  ["c/c3.img", 1 * MiB, [0]],
  ["c/c4.img", 5 * MiB, [2 * MiB]],
  ["gone1.img", 4 * MiB, [0]],
  ["c/gone2.img", 4 * MiB, [MiB]],
  ["d/e/f.img", 12 * MiB, [4 * MiB]],
  ["x1.img", 2 * MiB, [MiB]],
  ["x2.img", 128 * KiB, [0]],
  ["x3.img", 7 * MiB, [3 * MiB]],
];

function makeTree(root: string): void {
  for (const [p, size, offsets] of TREE) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    makeSparseFile(path.join(root, p), { size, chunks: offsets.map((offset, i) => ({ offset, length: Math.min(MiB, size - offset), seed: i + p.length })) });
  }
}

function assertSame(src: string, dst: string, p: string): void {
  const [s, d] = [path.join(src, p), path.join(dst, p)];
  assert.equal(fs.statSync(d).size, fs.statSync(s).size, p);
  assert.equal(fileHash(d), fileHash(s), `${p}: same bytes`);
  assert.ok(allocatedBytesOf(d) <= allocatedBytesOf(s) + 64 * KiB, `${p}: sparse (${allocatedBytesOf(d)} vs ${allocatedBytesOf(s)})`);
}

describe("ssync sync SRC/ DST/", { timeout: 600_000 }, () => {
  test("20 sparse files: identical and sparse; changed ones send only their blocks; quick check; --exclude; --delete", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src");
      const dst = path.join(dir, "dst");
      makeTree(src);
      fs.writeFileSync(path.join(src, "scratch.tmp"), "excluded");
      const first = await sync(dir, ["--exclude", "*.tmp", `${src}/`, `${dst}/`]);
      assert.equal(first.code, 0, first.stderr);
      assert.equal((first.o.counts as Record<string, number>).files, 20);
      assert.equal((first.o.counts as Record<string, number>).excluded, 1);
      for (const [p] of TREE) assertSame(src, dst, p);
      assert.equal(fs.existsSync(path.join(dst, "scratch.tmp")), false, "excluded: not synced");

      // Changed (same size), new, deleted; an excluded file only the destination has; a folder only it has.
      const fd = fs.openSync(path.join(src, "big.img"), "r+");
      fs.writeSync(fd, new Uint8Array(4 * KiB).fill(7), 0, 4 * KiB, 2 * GiB);
      fs.closeSync(fd);
      const fd2 = fs.openSync(path.join(src, "a/b/deep2.img"), "r+");
      fs.writeSync(fd2, new Uint8Array(4 * KiB).fill(9), 0, 4 * KiB, 0);
      fs.closeSync(fd2);
      makeSparseFile(path.join(src, "new1.img"), { size: 3 * MiB, chunks: [{ offset: MiB, length: MiB }] });
      makeSparseFile(path.join(src, "a/new2.img"), { size: 9 * MiB, chunks: [{ offset: 0, length: MiB }] });
      fs.rmSync(path.join(src, "gone1.img"));
      fs.rmSync(path.join(src, "c/gone2.img"));
      fs.writeFileSync(path.join(dst, "keep.tmp"), "mine");
      fs.mkdirSync(path.join(dst, "only-here/sub"), { recursive: true });
      fs.writeFileSync(path.join(dst, "only-here/sub/x"), "x");

      const second = await sync(dir, ["--exclude", "*.tmp", `${src}/`, `${dst}/`]);
      assert.equal(second.code, 0, second.stderr);
      for (const p of ["big.img", "a/b/deep2.img"]) {
        const f = second.files.get(p)!;
        assert.equal(f.outcome, "synced", p);
        assert.ok(f.dataBytesSent > 0 && f.dataBytesSent <= 64 * KiB, `${p}: only the changed block sent (${f.dataBytesSent})`);
      }
      for (const p of ["new1.img", "a/new2.img"]) assert.equal(second.files.get(p)!.outcome, "synced", p);
      const unchanged = TREE.map(([p]) => p).filter((p) => !["big.img", "a/b/deep2.img", "gone1.img", "c/gone2.img"].includes(p));
      for (const p of unchanged) {
        const f = second.files.get(p)!;
        assert.equal(f.outcome, "quick-check", p);
        assert.equal(f.sourceBytesRead + f.destinationBytesRead, 0, `${p}: nothing read`);
      }
      assert.equal((second.o.counts as Record<string, number>).quickCheck, unchanged.length);
      for (const p of [...TREE.map(([p]) => p).filter((p) => !p.includes("gone")), "new1.img", "a/new2.img"]) assertSame(src, dst, p);
      assert.ok(fs.existsSync(path.join(dst, "gone1.img")) && fs.existsSync(path.join(dst, "c/gone2.img")), "no --delete: kept");

      // A file absent from the source with a journal beside it: a sync into it is under way or was cut off.
      fs.writeFileSync(path.join(dst, "c/busy.img"), "busy");
      fs.writeFileSync(path.join(dst, "c/.busy.img.ssync-journal"), "not ours to touch");

      const dry = await sync(dir, ["-n", "--delete", "--exclude", "*.tmp", `${src}/`, `${dst}/`]);
      assert.equal(dry.code, 0, dry.stderr);
      assert.deepEqual([...(dry.o.deleted as string[])].sort(), ["c/gone2.img", "gone1.img", "only-here/", "only-here/sub/", "only-here/sub/x"]);
      assert.ok(fs.existsSync(path.join(dst, "gone1.img")) && fs.existsSync(path.join(dst, "only-here/sub/x")), "dry run: nothing removed");

      const del = await sync(dir, ["--delete", "--exclude", "*.tmp", `${src}/`, `${dst}/`]);
      assert.equal(del.code, 0, del.stderr);
      assert.equal(fs.existsSync(path.join(dst, "gone1.img")), false);
      assert.equal(fs.existsSync(path.join(dst, "c/gone2.img")), false);
      assert.equal(fs.existsSync(path.join(dst, "only-here")), false, "a folder the source lacks: removed once empty");
      assert.equal(fs.readFileSync(path.join(dst, "keep.tmp"), "utf8"), "mine", "excluded: not deleted");
      assert.equal((del.o.counts as Record<string, number>).synced, 0);
      assert.equal(fs.readFileSync(path.join(dst, "c/.busy.img.ssync-journal"), "utf8"), "not ours to touch", "work files never deleted");
      assert.equal(fs.readFileSync(path.join(dst, "c/busy.img"), "utf8"), "busy", "a file with a journal beside it: kept");
      assert.match(JSON.stringify(del.o.kept), /c\/busy\.img.*journal/);
    });
  });

  test("links, fifos and a symlinked folder leading outside: skipped with notes, nothing outside read or written", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src");
      const dst = path.join(dir, "dst");
      const outside = path.join(dir, "outside");
      fs.mkdirSync(outside);
      fs.writeFileSync(path.join(outside, "secret.img"), "secret");
      fs.mkdirSync(path.join(src, "real"), { recursive: true });
      fs.writeFileSync(path.join(src, "real/a.img"), "a");
      fs.symlinkSync(outside, path.join(src, "escape"));
      fs.symlinkSync(path.join(outside, "secret.img"), path.join(src, "link.img"));
      assert.equal(spawnSync("mkfifo", [path.join(src, "pipe")]).status, 0);
      // The destination's own link to outside, where the source has a folder: refused, not entered.
      fs.mkdirSync(path.join(src, "evil"));
      fs.writeFileSync(path.join(src, "evil/planted.img"), "planted");
      fs.mkdirSync(dst);
      fs.symlinkSync(outside, path.join(dst, "evil"));
      fs.symlinkSync(outside, path.join(dst, "escape2")); // absent from the source: --delete removes the link only
      const device = spawnSync("mknod", [path.join(src, "loop-node"), "b", "7", "250"]).status === 0;
      const atime = fs.statSync(path.join(outside, "secret.img")).atimeMs;
      const r = await sync(dir, ["--delete", "--progress=json", `${src}/`, `${dst}/`]);
      assert.equal(r.code, 1, r.stderr);
      const skipped = (r.o.skipped as { path: string; kind: string }[]).map((s) => `${s.path}:${s.kind}`).sort();
      assert.deepEqual(skipped, ["escape:symlink", "link.img:symlink", ...(device ? ["loop-node:block-device"] : []), "pipe:fifo"]);
      assert.equal(fs.existsSync(path.join(dst, "escape2")), false, "the link itself removed");
      assert.equal(fs.existsSync(path.join(dst, "loop-node")), false);
      const events = r.stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
      const last = events.at(-1);
      assert.equal(last?.final, true, r.stderr);
      assert.deepEqual([last.filesDone, last.filesTotal], [2, 2], "progress counts the whole set");
      assert.match(r.stderr, /escape: a symbolic link: skipped/);
      assert.equal(r.files.get("real/a.img")!.outcome, "synced");
      assert.equal(r.files.get("evil/planted.img")!.outcome, "failed");
      assert.match(r.stderr, /symbolic link is in the way/);
      assert.deepEqual(fs.readdirSync(outside), ["secret.img"], "nothing written outside");
      assert.equal(fs.statSync(path.join(outside, "secret.img")).atimeMs, atime);
      assert.deepEqual(fs.readdirSync(dst).sort(), ["evil", "real"]);
      assert.equal(fs.lstatSync(path.join(dst, "evil")).isSymbolicLink(), true);
    });
  });

  test("an unreadable source file fails alone: exit 1, the others synced", { skip: nobodyUnavailableReason() || false }, async () => {
    await withTempDir((dir) => {
      const src = path.join(dir, "src");
      const dst = path.join(dir, "dst");
      fs.mkdirSync(path.join(src, "s"), { recursive: true });
      for (const n of ["a.img", "s/b.img"]) fs.writeFileSync(path.join(src, n), n, { mode: 0o644 });
      fs.writeFileSync(path.join(src, "locked.img"), "secret", { mode: 0o600 });
      fs.mkdirSync(dst, { mode: 0o777 });
      for (const d of [dir, src, path.join(src, "s"), dst]) fs.chmodSync(d, 0o777);
      const env = { PATH: process.env.PATH, HOME: dir, DENO_DIR: path.join(dir, "deno-cache"), XDG_CONFIG_HOME: path.join(dir, "config") };
      const r = spawnSync(SSYNC, ["sync", "--json", `${src}/`, `${dst}/`], { uid: NOBODY, gid: NOBODY, encoding: "utf8", timeout: 120_000, env });
      assert.equal(r.status, 1, r.stderr);
      const o = JSON.parse(r.stdout.trim());
      assert.equal(o.ok, false);
      assert.equal(o.exitCode, 1);
      const files = new Map((o.files as FileRow[]).map((f) => [f.path, f]));
      assert.equal(files.get("locked.img")!.error!.code, "permission");
      assert.equal(files.get("a.img")!.outcome, "synced");
      assert.equal(files.get("s/b.img")!.outcome, "synced");
      assert.equal(fs.readFileSync(path.join(dst, "s/b.img"), "utf8"), "s/b.img");
      assert.equal(fs.existsSync(path.join(dst, "locked.img")), false);
      assert.match(r.stderr, /locked\.img: Cannot open .*permission denied/);
    });
  });

  test("Ctrl-C ends the whole run (exit 4); a rerun completes it and leaves no work file", async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src");
      const dst = path.join(dir, "dst");
      fs.mkdirSync(src);
      for (let i = 0; i < 300; i++) makeSparseFile(path.join(src, `f${String(i).padStart(3, "0")}.img`), { size: 8 * KiB, chunks: [{ offset: 0, length: 4 * KiB, seed: i }] });
      const child = spawnCli(["sync", "--progress=json", `${src}/`, `${dst}/`], { config: path.join(dir, "config") });
      let stderr = "";
      let sent = false;
      child.stderr!.on("data", (c) => {
        stderr += c;
        if (sent) return; // a second SIGINT would exit at once (interrupt.ts)
        const ev = stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).at(-1);
        if (ev && ev.filesDone >= 1 && ev.filesDone < ev.filesTotal) sent = process.kill(child.pid!, "SIGINT"); // not child.kill(): under Deno the child's end would read as that signal
      });
      const r = await finished(child, 120_000);
      assert.equal(r.code, 4, stderr);
      assert.ok(fs.readdirSync(dst).length < 300, "stopped before the end");
      const again = await sync(dir, [`${src}/`, `${dst}/`]);
      assert.equal(again.code, 0, again.stderr);
      assert.ok((again.o.counts as Record<string, number>).quickCheck >= 1, "the files done before are not read again");
      assert.deepEqual(fs.readdirSync(dst).filter((n) => n.includes("ssync")), []);
      for (const n of fs.readdirSync(src)) assert.equal(fileHash(path.join(dst, n)), fileHash(path.join(src, n)), n);
    });
  });

  test("usage: a folder without its slash, a file onto a folder, a folder onto a file", async () => {
    await withTempDir(async (dir) => {
      const d = path.join(dir, "d");
      const f = path.join(dir, "f.img");
      fs.mkdirSync(path.join(d, "sub"), { recursive: true });
      fs.writeFileSync(path.join(d, "sub/a.img"), "a");
      fs.writeFileSync(f, "x");
      const config = path.join(dir, "config");
      for (const [args, re] of [
        [[d, path.join(dir, "e")], /is a folder: .*end both names with a slash/],
        [[`${d}/`, path.join(dir, "e")], /both folders with a trailing slash/],
        [[f, `${d}/`], /Cannot sync the file .* it is a directory/],
        [[`${d}/`, `${f}`], /Cannot sync the folder .* it is a file/],
        [["--delete", f, path.join(dir, "g.img")], /--delete is for a folder sync only/],
        [[`${d}/`, `${d}/sub/new/`], /one is inside the other/],
        [["--delete", `${d}/sub/`, `${d}/`], /one is inside the other/],
        [[`${d}/`, `${dir}/./d/`], /the same folder/],
      ] as [string[], RegExp][]) {
        const r = await runCli(["sync", ...args], { config });
        assert.equal(r.code, 2, `${args}: ${r.stderr}`);
        assert.match(r.stderr, re);
      }
      assert.equal(fs.existsSync(path.join(dir, "e")), false);
      assert.equal(fs.readFileSync(path.join(d, "sub/a.img"), "utf8"), "a");
      assert.equal(fs.existsSync(path.join(d, "sub/new")), false);
    });
  });
});
