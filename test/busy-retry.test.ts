/**
 * `--wait SECONDS`: a writer finding its destination busy waits for the lock of a session
 * that is ending, then fails saying what holds it. Real CLI processes (scripts/ssync), a
 * real listener on 127.0.0.1 (`ssync listen`, or one in this process that answers busy at
 * once, so that only the client's own retries are seen); a lock is held deterministically
 * by this test process (a writer's store opened on the very file) or by a second client.
 * SSYNC_TEST_SIGNAL_ROUNDS=N repeats the kill -9 rerun N times.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { allocatedIn, waitForGrowth } from "./helpers/growth.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { type CliResult, finished, runCli, spawnCli, startListener, waitFor } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const ROUNDS = Math.max(1, Number(process.env.SSYNC_TEST_SIGNAL_ROUNDS ?? 1) || 1);
/** The end of a busy refusal after waiting: "…; waited 1.2 s (--wait SECONDS waits longer)". */
const WAITED = /; waited (\d+(?:\.\d)?) s \(--wait SECONDS waits longer\)$/;

/** Session lines in a listener's log for a push of `name` that was refused busy. */
function busyRefusals(log: string, name: string): number {
  return log.split("\n").filter((l) => l.includes(`push "${name}"`) && l.includes(": failed: EBUSY ")).length;
}

/** The seconds a busy refusal says it waited. */
function waitedSeconds(line: string): number {
  const m = WAITED.exec(line);
  assert.ok(m, `says how long it waited and how to wait longer: ${line}`);
  return Number(m[1]);
}

function lastLine(stderr: string): string {
  return stderr.trim().split("\n").at(-1) ?? "";
}

/** A large image (`mib` MiB of random data), so that a push of it is still running a while. */
function makeBig(file: string, mib: number): void {
  makeSparseFile(file, { size: (mib + 16) * MiB, chunks: [{ offset: 0, length: mib * MiB, fill: "random" }] });
}

function makeSmall(file: string, seed: number): void {
  makeSparseFile(file, { size: 8 * MiB, chunks: [{ offset: MiB, length: MiB, seed }] });
}

/** Lets go of the lock `held`; then the sync waiting for it (`done`) exits 0 with `dst` identical to `src`. */
async function letGoThenIdentical(held: AsyncDisposable, o: { done: Promise<CliResult>; src: string; dst: string }): Promise<void> {
  await held[Symbol.asyncDispose]();
  const r = await o.done;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fileHash(o.dst), fileHash(o.src));
}

/** Whether process `pid` has `file` open (Linux /proc). */
function hasOpen(pid: number, file: string): boolean {
  const real = fs.realpathSync(file);
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === real;
      } catch {
        return false;
      }
    });
  } catch {
    return false;
  }
}

describe("--wait: a busy destination", () => {
  test("--wait is whole seconds from 0", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      for (const args of [["sync", "--wait", "x", "a", "b"], ["push", "--wait=-1", "a", "h:1"], ["pull", "--wait", "1.5", "h:1:a", "b"]]) {
        const r = await runCli(args, { config: dir });
        assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
        assert.match(r.stderr, /Invalid --wait .*: give whole seconds from 0/);
      }
    });
  });

  test("push into a file another writer holds: --wait 0 fails at once, --wait 1 after a few tries, the default outlasts a lock let go", { timeout: 90_000 }, async () => {
    await withTempDir(async (dir) => {
      const pool = new WorkerPool({ size: 2 });
      // Answers busy at once: what is seen is the client's own waiting.
      const server = await startListener(dir, { pool, lockWaitMs: 0 });
      try {
        const client = path.join(dir, "client-config");
        const keygen = await runCli(["keygen"], { config: client });
        assert.equal(keygen.code, 0, keygen.stderr);
        fs.copyFileSync(path.join(client, "ssync", "id_ssync.pub"), server.authorizedKeys);
        const remote = `127.0.0.1:${server.listener.port}`;
        const log = () => server.logs.join("\n");
        const src = path.join(dir, "vm.img");
        const dst = path.join(server.root, "vm.img");
        makeSmall(src, 3);
        makeSmall(dst, 4);
        const old = fileHash(dst);
        // This process is the other writer: it holds the destination's lock.
        const held = await openDestination(dst, { create: false });
        try {
          let refusals = busyRefusals(log(), "vm.img");
          const now = await runCli(["push", "--accept-new", "--wait", "0", src, `${remote}:vm.img`], { config: client });
          assert.equal(now.code, 1, now.stderr);
          const nowLine = lastLine(now.stderr);
          assert.ok(nowLine.startsWith("ssync: remote: Cannot write vm.img: it is busy, another ssync is writing it; waited "), nowLine);
          assert.ok(waitedSeconds(nowLine) < 1, nowLine);
          assert.equal(busyRefusals(log(), "vm.img"), refusals + 1, "--wait 0 tried once");
          refusals = busyRefusals(log(), "vm.img");

          const soon = await runCli(["push", "--wait", "1", src, `${remote}:vm.img`], { config: client });
          assert.equal(soon.code, 1, soon.stderr);
          const soonLine = lastLine(soon.stderr);
          assert.ok(soonLine.startsWith("ssync: remote: Cannot write vm.img: it is busy, another ssync is writing it; waited "), soonLine);
          assert.ok(waitedSeconds(soonLine) >= 1, soonLine);
          const tries = busyRefusals(log(), "vm.img") - refusals;
          // At 0, 100, 300, 700 ms and once more by 1 s: a few tries, never a flood of handshakes.
          assert.ok(tries >= 3 && tries <= 6, `--wait 1 tried ${tries} times`);
          assert.equal(fileHash(dst), old, "nothing was written");

          refusals = busyRefusals(log(), "vm.img");
          const child = spawnCli(["push", src, `${remote}:vm.img`], { config: client });
          const done = finished(child, 30_000);
          await waitFor(() => busyRefusals(log(), "vm.img") > refusals, { timeoutMs: 15_000, what: "the push to be refused busy" });
          await letGoThenIdentical(held, { done, src, dst });
        } finally {
          await held[Symbol.asyncDispose]();
        }
      } finally {
        await server.listener.close();
        await pool[Symbol.asyncDispose]();
      }
    });
  });

  test("kill -9 of a push client: a push started while it held the file, or right after it died, waits for its lock and succeeds", { timeout: 120_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, root, listener, remote }) => {
      const medium = path.join(dir, "medium.img");
      const small = path.join(dir, "small.img");
      const dst = path.join(root, "vm.img");
      makeBig(medium, 96);
      makeSmall(small, 5);
      const killMidway = async (): Promise<void> => {
        const from = allocatedIn(root);
        const a = spawnCli(["push", medium, `${remote}:vm.img`], { config: client });
        const killed = finished(a, 60_000);
        await waitForGrowth(root, { from, bytes: 8 * MiB, timeoutMs: 30_000, what: "the first push's data" });
        process.kill(a.pid!, "SIGKILL");
        assert.equal((await killed).signal, "SIGKILL", "the push was killed before it finished");
      };

      // 1. A second push while the first holds the file (stopped mid-transfer: its session,
      //    and so the lock, stays): refused busy, it tries again until the first, killed,
      //    lets go of the file.
      const from = allocatedIn(root);
      const a = spawnCli(["push", medium, `${remote}:vm.img`], { config: client });
      const aDone = finished(a, 60_000);
      await waitForGrowth(root, { from, bytes: 8 * MiB, timeoutMs: 30_000, what: "the first push's data" });
      process.kill(a.pid!, "SIGSTOP");
      const refusals = busyRefusals(listener.stderr(), "vm.img");
      const b = spawnCli(["push", small, `${remote}:vm.img`], { config: client });
      const bDone = finished(b, 60_000);
      await waitFor(() => busyRefusals(listener.stderr(), "vm.img") > refusals, { timeoutMs: 20_000, what: "the second push to be refused busy" });
      process.kill(a.pid!, "SIGKILL");
      assert.equal((await aDone).signal, "SIGKILL");
      const rb = await bDone;
      assert.equal(rb.code, 0, rb.stderr);
      assert.equal(fileHash(dst), fileHash(small), "the second push made it identical");

      // 2. The same push rerun the moment the first is killed.
      for (let round = 0; round < ROUNDS; round++) {
        await killMidway();
        const r = await runCli(["push", medium, `${remote}:vm.img`], { config: client });
        assert.equal(r.code, 0, `round ${round + 1}: ${r.stderr}`);
        assert.equal(fileHash(dst), fileHash(medium), `round ${round + 1}: the rerun made it identical`);
      }
    });
  });

  test("sync into a file another writer holds: --wait 0 fails at once, the default outlasts a lock let go", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSmall(src, 6);
      makeSmall(dst, 7);
      const held = await openDestination(dst, { create: false });
      try {
        const now = await runCli(["sync", "--wait", "0", src, dst], { config: dir });
        assert.equal(now.code, 1, now.stderr);
        const line = lastLine(now.stderr);
        assert.ok(line.startsWith(`ssync: Cannot `) && line.includes(dst), `names the file, not "remote": ${line}`);
        assert.ok(line.includes("another ssync is writing it; waited "), line);
        assert.equal(waitedSeconds(line), 0, line);

        const child = spawnCli(["sync", src, dst], { config: dir });
        const done = finished(child, 30_000);
        // Let go once it is waiting for the lock: its descriptor of the destination is seen
        // (storage may close it between tries), or 2 s have passed, well inside its 5 s.
        const started = performance.now();
        await waitFor(() => hasOpen(child.pid!, dst) || child.exitCode !== null || performance.now() - started > 2000, {
          timeoutMs: 15_000,
          everyMs: 2,
          what: "the sync to open its destination",
        });
        await new Promise((r) => setTimeout(r, 300));
        await letGoThenIdentical(held, { done, src, dst });
      } finally {
        await held[Symbol.asyncDispose]();
      }
    });
  });
});
