/**
 * The crash-safe destination's parts (src/storage/journaled-storage.ts, partial-storage.ts,
 * recover-journal.ts): nothing reaches an existing destination before commit; a journal an
 * interrupted sync left is completed (committed) or rolled back (not), and a forged or torn
 * COMMIT record never counts; readers wait for or refuse a half-applied commit; a new file
 * appears under its name only at commit and a rerun resumes from its partial file.
 * Crashes are real: the CLI kills itself at a named point (SSYNC_TEST_CRASH, crash-point.ts).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { openDestination } from "../src/storage/open-destination.ts";
import { openSource } from "../src/storage/open-source.ts";
import { libc } from "../src/platform/libc.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { runCli, startCliListener, waitFor } from "./helpers/network.ts";

const ssync = new URL("../scripts/ssync", import.meta.url).pathname;
const MiB = 1 << 20;
const T = { timeout: 60_000 };

function cli(args: string[], env: Record<string, string> = {}): { status: number | null; signal: string | null; stdout: string; stderr: string } {
  const r = spawnSync(ssync, args, { encoding: "utf8", timeout: 60_000, env: { ...process.env, ...env } });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Two different 16 MiB images with 4 MiB of data each, partly at the same offsets. */
function twoImages(dir: string): { a: string; b: string } {
  const a = path.join(dir, "a.img");
  const b = path.join(dir, "b.img");
  makeSparseFile(a, { size: 16 * MiB, chunks: [{ offset: 0, length: 2 * MiB, seed: 1 }, { offset: 8 * MiB, length: 2 * MiB, seed: 2 }] });
  makeSparseFile(b, { size: 16 * MiB, chunks: [{ offset: MiB, length: 2 * MiB, seed: 3 }, { offset: 12 * MiB, length: 2 * MiB, seed: 4 }] });
  return { a, b };
}

/** d.img in `dir` holds image a, and a sync of b onto it was killed at its commit point: its journal is committed. */
function committedJournal(dir: string): { a: string; b: string; d: string } {
  const { a, b } = twoImages(dir);
  const d = path.join(dir, "d.img");
  assert.equal(cli(["sync", a, d]).status, 0);
  assert.equal(cli(["sync", b, d], { SSYNC_TEST_CRASH: "committed" }).signal, "SIGKILL");
  return { a, b, d };
}

/** Runs `body` on a tmpfs of `size` mounted at dir/small, unmounted after; false if it cannot be mounted (it needs root). */
function withTmpfs(dir: string, size: string, body: (small: string) => void): boolean {
  const small = path.join(dir, "small");
  fs.mkdirSync(small);
  if (spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", small]).status !== 0) return false;
  try {
    body(small);
  } finally {
    spawnSync("umount", [small]);
  }
  return true;
}

const journalOf = (file: string) => path.join(path.dirname(file), `.${path.basename(file)}.ssync-journal`);
const partialOf = (file: string) => path.join(path.dirname(file), `.${path.basename(file)}.ssync-partial`);

describe("redo journal", T, () => {
  test("an existing destination is untouched until commit; without commit it stays the old image", async () => {
    await withTempDir(async (dir) => {
      const { a } = twoImages(dir);
      const before = fileHash(a);
      {
        await using d = await openDestination(a, { create: false });
        await d.write(new Uint8Array(4096).fill(7), 0);
        await d.punchHole(8 * MiB, MiB);
        await d.setSize(20 * MiB);
        assert.equal(d.size, 20 * MiB);
        assert.equal(fileHash(a), before, "not written before commit");
        assert.ok(fs.existsSync(journalOf(a)), "the journal holds the changes");
      }
      assert.equal(fileHash(a), before, "disposed without commit: the old image");
      assert.ok(!fs.existsSync(journalOf(a)), "and its journal is gone");
      {
        await using d = await openDestination(a, { create: false });
        await d.write(new Uint8Array(4096).fill(7), 0);
        await d.setSize(20 * MiB);
        await d.commit();
      }
      assert.equal(fs.statSync(a).size, 20 * MiB);
      const head = Buffer.alloc(4096);
      const fd = fs.openSync(a, "r");
      fs.readSync(fd, head, 0, 4096, 0);
      fs.closeSync(fd);
      assert.ok(head.every((x) => x === 7), "committed: the new contents");
      assert.ok(!fs.existsSync(journalOf(a)));
    });
  });

  test("a sync that changes nothing writes no journal", async () => {
    await withTempDir((dir) => {
      const { a } = twoImages(dir);
      const d = path.join(dir, "d.img");
      assert.equal(cli(["sync", a, d]).status, 0);
      const stamp = (f: string) => { const st = fs.statSync(f, { bigint: true }); return [st.mtimeNs, st.ctimeNs]; };
      // Without FFI the portable lock file comes and goes in the folder: only the file is checked then.
      const watched = libc ? [dir, d] : [d];
      const before = watched.map(stamp);
      const r = cli(["sync", a, d]);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(watched.map(stamp), before, "no file made or removed in the folder, the destination untouched");
    });
  });

  for (const [point, image] of [["journal-write:3", "old"], ["journal-synced", "old"], ["committed", "new"], ["apply:2", "new"], ["journal-removed", "new"]] as const) {
    test(`killed at ${point}: the next sync says what it did and the destination was the ${image} image`, async () => {
      await withTempDir((dir) => {
        const { a, b } = twoImages(dir);
        const d = path.join(dir, "d.img");
        assert.equal(cli(["sync", a, d]).status, 0);
        const killed = cli(["sync", b, d], { SSYNC_TEST_CRASH: point });
        assert.equal(killed.signal, "SIGKILL", `killed at ${point}: ${killed.stderr}`);
        const r = cli(["recover", d]);
        assert.equal(r.status, 0, r.stderr);
        if (point === "journal-removed") assert.match(r.stdout, /nothing to recover/);
        else assert.match(r.stdout, image === "old" ? /rolled back an interrupted sync of .*d\.img/ : /completed an interrupted sync of .*d\.img/);
        assert.equal(fileHash(d), fileHash(image === "old" ? a : b));
        assert.ok(!fs.existsSync(journalOf(d)));
        assert.equal(cli(["sync", b, d]).status, 0);
        assert.equal(fileHash(d), fileHash(b));
      });
    });
  }

  test("a journal whose COMMIT record does not check is rolled back, never applied", async () => {
    await withTempDir((dir) => {
      const { a, d } = committedJournal(dir);
      // Flip one bit of the first record's offset: its head no longer matches the COMMIT hash.
      const j = journalOf(d);
      const bytes = fs.readFileSync(j);
      const first = 12 + bytes.readUInt32LE(8);
      bytes[first + 8] ^= 1;
      fs.writeFileSync(j, bytes);
      const r = cli(["recover", d]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /rolled back/);
      assert.equal(fileHash(d), fileHash(a));
    });
  });

  test("no space for the journal: the sync fails before the destination is touched, and leaves no journal", async (t) => {
    await withTempDir((dir) => {
      const mounted = withTmpfs(dir, "12m", (small) => {
        const { a } = twoImages(dir);
        const d = path.join(small, "d.img");
        assert.equal(cli(["sync", a, d]).status, 0, "4 MiB of data fits");
        const big = path.join(dir, "big.img");
        makeSparseFile(big, { size: 16 * MiB, chunks: [{ offset: 0, length: 16 * MiB, fill: "random" }] });
        const r = cli(["sync", big, d]);
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, /no space|ENOSPC/i);
        assert.equal(fileHash(d), fileHash(a), "the old image");
        assert.deepEqual(fs.readdirSync(small), ["d.img"], "no journal left behind");
      });
      if (!mounted) t.skip("mounting a tmpfs needs root");
    });
  });

  test("no space to apply: the reservation fails before the commit point; the contents are unchanged", async (t) => {
    await withTempDir((dir) => {
      const mounted = withTmpfs(dir, "14m", (small) => {
        const { a } = twoImages(dir);
        const d = path.join(small, "d.img");
        assert.equal(cli(["sync", a, d]).status, 0);
        // 6 MiB more data where d has holes: the journal (6 MiB) fits, applying it as well does not.
        const more = path.join(dir, "more.img");
        fs.copyFileSync(a, more);
        const fd = fs.openSync(more, "r+");
        fs.writeSync(fd, Buffer.alloc(6 * MiB, 9), 0, 6 * MiB, 2 * MiB);
        fs.closeSync(fd);
        const r = cli(["sync", more, d]);
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, /Cannot reserve the space for the changes to .*d\.img: .*; its contents are unchanged/);
        assert.equal(fileHash(d), fileHash(a));
        assert.deepEqual(fs.readdirSync(small), ["d.img"], "no journal left");
      });
      if (!mounted) t.skip("mounting a tmpfs needs root");
    });
  });

  test("a journal this user did not write, or a committed one of another inode, is neither applied nor removed", async () => {
    await withTempDir((dir) => {
      const { a, d } = committedJournal(dir);
      const j = journalOf(d);
      fs.chownSync(j, 65534, 65534); // as if someone else had made it
      let r = cli(["recover", d]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /is not a journal ssync wrote as this user \(owner uid 65534.*neither applied nor removed/);
      assert.equal(fileHash(d), fileHash(a));
      assert.ok(fs.existsSync(j));
      fs.chownSync(j, process.getuid!(), process.getgid!());
      // The file replaced by a copy (another inode) after the crash: the journal is not its.
      fs.copyFileSync(d, `${d}.copy`);
      fs.renameSync(`${d}.copy`, d);
      r = cli(["recover", d]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /holds a committed sync begun \S+ into another file \(inode \d+, not \d+\).*remove it/);
      assert.equal(fileHash(d), fileHash(a));
      assert.ok(fs.existsSync(j));
    });
  });

  test("a FIFO put at the journal's name is refused, never waited on", async () => {
    await withTempDir((dir) => {
      const { a } = twoImages(dir);
      const d = path.join(dir, "d.img");
      assert.equal(cli(["sync", a, d]).status, 0);
      assert.equal(spawnSync("mkfifo", [journalOf(d)]).status, 0);
      const r = cli(["recover", d]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /\.d\.img\.ssync-journal \(beside it\) is not a journal ssync wrote/);
      assert.equal(cli(["sync", "--dry-run", a, d]).status, 0, "a reader is not held up by it");
    });
  });

  test("disposing with a write in flight waits for it: no byte goes through a reused descriptor", async () => {
    await withTempDir(async (dir) => {
      const { a } = twoImages(dir);
      const before = fileHash(a);
      const d = await openDestination(a, { create: false });
      let settled = false;
      const w = d.write(new Uint8Array(8 * MiB).fill(5), 0);
      w.then(() => (settled = true), () => (settled = true));
      await d[Symbol.asyncDispose]();
      assert.ok(settled, "the write settled before the journal's descriptor was closed");
      assert.equal(fileHash(a), before);
      assert.ok(!fs.existsSync(journalOf(a)));
      await assert.rejects(d.write(new Uint8Array(1), 0), /already closed/);
    });
  });

  test("a reader waits for a committed journal, and is refused when it stays", async () => {
    await withTempDir(async (dir) => {
      const { b, d } = committedJournal(dir);
      await assert.rejects(openSource(d, { lockWaitMs: 200 }), (e: Error & { code?: string }) => {
        assert.equal(e.code, "EBUSY");
        assert.match(e.message, /Cannot read .*d\.img: a sync into it is being committed.*ssync recover/);
        return true;
      });
      await assert.rejects(openDestination(d, { create: false, readOnly: true }), /a sync into it is being committed/);
      const reading = openSource(d, { lockWaitMs: 10_000 });
      await new Promise((resolve) => setTimeout(resolve, 150));
      assert.equal(cli(["recover", d]).status, 0);
      await using s = await reading;
      assert.equal(s.size, 16 * MiB);
      assert.equal(fileHash(d), fileHash(b));
    });
  });
});

describe("partial file", T, () => {
  test("a new file appears under its name only at commit; a killed first copy resumes", async () => {
    await withTempDir((dir) => {
      const { b } = twoImages(dir);
      const d = path.join(dir, "new.img");
      const killed = cli(["sync", "--json", b, d], { SSYNC_TEST_CRASH: "partial-write:3" });
      assert.equal(killed.signal, "SIGKILL");
      assert.ok(!fs.existsSync(d), "nothing under the name");
      assert.ok(fs.existsSync(partialOf(d)), "the partial file stays");
      const full = cli(["sync", "--json", b, path.join(dir, "full.img")]);
      const rerun = cli(["sync", "--json", b, d]);
      assert.equal(rerun.status, 0, rerun.stderr);
      assert.equal(fileHash(d), fileHash(b));
      assert.ok(!fs.existsSync(partialOf(d)));
      const sent = (r: { stdout: string }) => JSON.parse(r.stdout).dataBytesSent as number;
      assert.ok(sent(rerun) < sent(full), `the rerun sent ${sent(rerun)} bytes, a full copy ${sent(full)}`);
    });
  });

  test("resume: a rerun after a kill at 90% of a first copy sends at most 20% of the data; an interrupted update reruns at the update's cost", async () => {
    await withTempDir((dir) => {
      // 40 separate 1 MiB runs of random data: one DATA (≤ MAX_DATA_LENGTH) and one write each.
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 128 * MiB, chunks: Array.from({ length: 40 }, (_, i) => ({ offset: i * 3 * MiB, length: MiB, fill: "random" as const })) });
      const sent = (r: { stdout: string; stderr: string }) => {
        assert.ok(r.stdout.trim().startsWith("{"), r.stderr);
        return JSON.parse(r.stdout).dataBytesSent as number;
      };
      const d = path.join(dir, "new.img");
      assert.equal(cli(["sync", "--json", src, d], { SSYNC_TEST_CRASH: "partial-write:36" }).signal, "SIGKILL");
      const rerun = cli(["sync", "--json", src, d]);
      assert.equal(fileHash(d), fileHash(src));
      assert.ok(sent(rerun) <= 0.2 * 40 * MiB, `the rerun sent ${sent(rerun)} bytes of ${40 * MiB}`);
      // An update of 10 of the runs, interrupted before its commit: rolled back, then as cheap as the update.
      const base = path.join(dir, "base.img");
      assert.equal(cli(["sync", src, base]).status, 0);
      const fd = fs.openSync(src, "r+");
      for (let i = 0; i < 10; i++) fs.writeSync(fd, Buffer.alloc(MiB, i + 1), 0, MiB, i * 6 * MiB);
      fs.closeSync(fd);
      const update = cli(["sync", "--json", src, d]);
      assert.equal(cli(["sync", "--json", src, base], { SSYNC_TEST_CRASH: "journal-write:9" }).signal, "SIGKILL");
      const again = cli(["sync", "--json", src, base]);
      assert.match(again.stderr, /rolled back an interrupted sync/);
      assert.equal(fileHash(base), fileHash(src));
      assert.equal(sent(again), sent(update), "the rerun sends what the update sends, no more");
    });
  });

  test("a sync that fails before writing leaves no partial file behind", async () => {
    await withTempDir((dir) => {
      const d = path.join(dir, "new.img");
      const r = cli(["sync", path.join(dir, "missing.img"), d]);
      assert.equal(r.status, 1);
      assert.deepEqual(fs.readdirSync(dir), []);
    });
  });
});

describe("listener", T, () => {
  test("killed after its commit point: the client is told interrupted, and the restarted listener completes the file first", async () => {
    await withCliSetup({ env: () => ({ SSYNC_TEST_CRASH: "committed" }) }, async ({ dir, client, server, root, listener: crashing }) => {
      const { a, b } = twoImages(dir);
      const d = path.join(root, "d.img");
      try {
        const first = await runCli(["push", "--accept-new", a, `127.0.0.1:${crashing.port}:d.img`], { config: client });
        assert.equal(first.code, 0, first.stderr); // a new file commits by rename: no journal, no crash point
        const second = await runCli(["push", b, `127.0.0.1:${crashing.port}:d.img`], { config: client });
        assert.equal(second.code, 4, second.stderr);
        assert.match(second.stderr, /rerun the same command/);
      } finally {
        await crashing.stop();
      }
      assert.equal(crashing.child.signalCode, "SIGKILL", "the listener killed itself at its commit point");
      assert.equal(fileHash(d), fileHash(a), "committed but not applied yet");
      assert.ok(fs.existsSync(journalOf(d)));
      const restarted = await startCliListener(["--root", root], { config: server });
      try {
        await waitFor(() => /completed an interrupted sync of .*d\.img/.test(restarted.stderr()), { timeoutMs: 5000, what: "the recovery line" });
        assert.equal(fileHash(d), fileHash(b), "whole before the first session: the new image");
        assert.ok(!fs.existsSync(journalOf(d)));
      } finally {
        await restarted.stop();
      }
    });
  });
});

