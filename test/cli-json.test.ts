/**
 * `--json` for scripts (issue 10, scope 6), through the real CLI: every outcome is one JSON
 * object on stdout — successes ({schema: 1, ok: true, identical, changed, …}) and failures
 * ({schema: 1, ok: false, error: {code, message}, exitCode}) alike, usage errors and an
 * interruption included — and the exit codes are what they were. A local sync reports no wire
 * fields; the root hash is named for what it is: per session.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { type CliResult, finished, runCli, spawnCli, waitFor } from "./helpers/network.ts";
import { makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const T = { timeout: 60_000 };

/** stdout is exactly one line, a JSON object: returns it. */
function only(r: CliResult, what: string): Record<string, unknown> {
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `${what}: one line on stdout, got ${JSON.stringify(r.stdout)}; stderr ${r.stderr}`);
  return JSON.parse(lines[0]);
}

function assertError(r: CliResult, expected: { code: string; exitCode: number; message?: RegExp }, what: string): void {
  const o = only(r, what);
  assert.equal(r.code, expected.exitCode, `${what}: exit ${r.code}; ${r.stderr}`);
  assert.equal(o.schema, 1, what);
  assert.equal(o.ok, false, what);
  assert.equal(o.exitCode, expected.exitCode, what);
  const error = o.error as { code: string; message: string };
  assert.equal(error.code, expected.code, `${what}: ${JSON.stringify(o)}`);
  assert.equal(typeof error.message, "string");
  if (expected.message) assert.match(error.message, expected.message, what);
}

describe("ssync --json", () => {
  test("a local sync: schema, identical, changed; no wire fields; the root hash is per session", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: MiB, length: 256 * 1024, seed: 1 }] });
      const sync = async (...flags: string[]) => {
        const r = await runCli(["sync", "--json", ...flags, src, dst], { config: dir });
        assert.equal(r.code, 0, r.stderr);
        return only(r, `sync ${flags.join(" ")}`);
      };
      const first = await sync();
      assert.equal(first.schema, 1);
      assert.equal(first.ok, true);
      assert.equal(first.exitCode, 0);
      assert.deepEqual([first.identical, first.changed], [false, true], "a first copy changed it");
      for (const field of ["wireBytesSent", "wireBytesReceived", "rootHash"]) assert.ok(!(field in first), `no ${field} in ${JSON.stringify(first)}`);
      assert.match(first.sessionRootHash as string, /^[0-9a-f]{32}$/);

      const again = await sync();
      assert.deepEqual([again.identical, again.changed], [true, false], "nothing to do");
      assert.notEqual(again.sessionRootHash, first.sessionRootHash, "keyed per session: no identity across runs");

      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: MiB, length: 256 * 1024, seed: 2 }] });
      const dry = await sync("--dry-run");
      assert.deepEqual([dry.identical, dry.changed, dry.dryRun], [false, false, true], "a dry run changes nothing");
      const real = await sync();
      assert.deepEqual([real.identical, real.changed], [false, true]);

      // A destination with the same data but longer is not identical: the sync shrinks it.
      fs.truncateSync(dst, 5 * MiB);
      const longer = await sync();
      assert.deepEqual([longer.identical, longer.changed], [false, true], "size differed");
      assert.equal(fs.statSync(dst).size, 4 * MiB);
    });
  });

  test("failures are one JSON object too: usage, not-found, an unknown option, with unchanged exit codes", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: MiB, chunks: [] });
      assertError(await runCli(["sync", "--json", "--block-size", "3", src, path.join(dir, "d")], { config: dir }), {
        code: "usage",
        exitCode: 2,
        message: /Invalid --block-size 3/,
      }, "a bad --block-size");
      assertError(await runCli(["sync", "--json", "--bogus", src, path.join(dir, "d")], { config: dir }), {
        code: "usage",
        exitCode: 2,
        message: /Unknown option --bogus/,
      }, "an unknown option");
      const missing = await runCli(["sync", "--json", path.join(dir, "nope.img"), path.join(dir, "d")], { config: dir });
      assertError(missing, { code: "not-found", exitCode: 1, message: /nope\.img/ }, "a missing source");
      assert.match(missing.stderr, /^ssync: .*nope\.img/m, "people still read the line on stderr");
      // Without --json: no JSON on stdout.
      const plain = await runCli(["sync", path.join(dir, "nope.img"), path.join(dir, "d")], { config: dir });
      assert.equal(plain.code, 1);
      assert.equal(plain.stdout, "");
    });
  });

  test("push and pull: wire fields, identical on a rerun; an unknown host key is error code auth, exit 5", { timeout: 120_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, remote, root }) => {
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, { size: 8 * MiB, chunks: [{ offset: 0, length: 512 * 1024, seed: 3 }] });
      assertError(await runCli(["push", "--json", src, `${remote}:vm.img`], { config: client }), {
        code: "auth",
        exitCode: 5,
        message: /host key .* is unknown/,
      }, "an unknown host key");
      assert.equal(fs.existsSync(path.join(root, "vm.img")), false);

      let r = await runCli(["push", "--json", "--accept-new", src, `${remote}:vm.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      let s = only(r, "push");
      assert.deepEqual([s.schema, s.ok, s.identical, s.changed], [1, true, false, true]);
      assert.equal(typeof s.wireBytesSent, "number");
      assert.equal(typeof s.wireBytesReceived, "number");
      r = await runCli(["push", "--json", src, `${remote}:vm.img`], { config: client });
      s = only(r, "push again");
      assert.deepEqual([s.identical, s.changed], [true, false]);

      const local = path.join(dir, "copy.img");
      r = await runCli(["pull", "--json", `${remote}:vm.img`, local], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual([only(r, "pull").identical, only(r, "pull").changed], [false, true]);
      r = await runCli(["pull", "--json", `${remote}:vm.img`, local], { config: client });
      assert.deepEqual([only(r, "pull again").identical, only(r, "pull again").changed], [true, false]);

      assertError(await runCli(["pull", "--json", `${remote}:absent.img`, path.join(dir, "x.img")], { config: client }), {
        code: "not-found",
        exitCode: 1,
      }, "a missing remote file");
    });
  });

  test("interrupted: the last line on stdout is the JSON object (interrupted, exit 4)", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 4 * MiB, seed: 4 }, { offset: 8 * MiB, length: 4 * MiB, seed: 5 }] });
      const pause = path.join(dir, "pause");
      const child = spawnCli(["sync", "--json", src, dst], { config: dir, env: { SSYNC_TEST_PAUSE_FILE: pause } });
      const done = finished(child, 30_000);
      try {
        await waitFor(() => fs.existsSync(pause), { timeoutMs: 20_000, what: "the sync paused after its first range" });
      } catch (e) {
        child.kill("SIGKILL");
        await done.catch(() => {});
        throw e;
      }
      process.kill(child.pid!, "SIGINT");
      const r = await done;
      assertError(r, { code: "interrupted", exitCode: 4, message: /interrupted: rerun the same command/ }, "SIGINT");
      assert.match(r.stderr.trim().split("\n").at(-1)!, /^ssync: interrupted: rerun/);
    });
  });
});
