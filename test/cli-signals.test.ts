/**
 * Ctrl-C (SIGINT) and SIGTERM on the client commands, and a lost connection, through the
 * real CLI (scripts/ssync as child processes) and a real listener on 127.0.0.1:
 * - push, pull and sync signalled mid-transfer exit 4, within a few seconds, with the one
 *   line "ssync: interrupted: rerun the same command to complete it";
 * - the destination is then its whole old image (or already the whole new one), never a
 *   mix, and a rerun of the same command makes it identical;
 * - a listener killed mid-push: exit 4, the cause and the same advice.
 * Every sync is started, then signalled once its data is seen arriving (the destination's
 * folder grows), not after a blind sleep. SSYNC_TEST_SIGNAL_ROUNDS=N repeats each case.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { ProtocolError } from "../protocol/codec.ts";
import { describeError, exitCodeOf } from "../src/cli/exit-code.ts";
import { IncompleteSyncError, InterruptedError } from "../src/util/errors.ts";
import { allocatedIn, waitForGrowth } from "./helpers/growth.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { type CliListener, type CliResult, finished, runCli, spawnCli, waitFor } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const ROUNDS = Math.max(1, Number(process.env.SSYNC_TEST_SIGNAL_ROUNDS ?? 1) || 1);
const ADVICE = "interrupted: rerun the same command to complete it";
const LINE = `ssync: ${ADVICE}`;
/** From the signal to the exit, at most (the CLI's own bound is 3 s). */
const EXIT_BOUND_MS = 5000;
/** Apparent size of both images; the new one has 128 MiB of random data the old one lacks. */
const SIZE = 192 * MiB;

function makeOld(file: string): void {
  makeSparseFile(file, { size: SIZE, chunks: [{ offset: 0, length: MiB, seed: 7 }] });
}

function makeNew(file: string): void {
  makeSparseFile(file, { size: SIZE, chunks: [{ offset: 0, length: MiB, seed: 8 }, { offset: 32 * MiB, length: 128 * MiB, fill: "random" }] });
}

/** The new image at `src`, the old at `dst`; their hashes. */
function makeImages(src: string, dst: string): { old: string; fresh: string } {
  makeNew(src);
  makeOld(dst);
  return { old: fileHash(dst), fresh: fileHash(src) };
}

interface Interrupted {
  result: CliResult;
  /** From the first signal to the exit. */
  exitMs: number;
}

/** Runs `ssync ARGS`, sends `signals` once `watch` has grown by 8 MiB, waits for the exit. */
async function interruptMidway(
  args: string[],
  o: { config: string; watch: string; signals: NodeJS.Signals[]; before?: () => void },
): Promise<Interrupted> {
  const from = allocatedIn(o.watch);
  const child = spawnCli(args, { config: o.config });
  const done = finished(child, 60_000);
  try {
    await waitForGrowth(o.watch, { from, bytes: 8 * MiB, timeoutMs: 30_000, what: `data from ssync ${args[0]}` });
  } catch (e) {
    child.kill("SIGKILL");
    await done.catch(() => {});
    throw e;
  }
  const signalled = performance.now();
  // Not child.kill(): under Deno a child killed through it reports that signal as its end
  // even when it exited with a code.
  for (const s of o.signals) process.kill(child.pid!, s);
  const result = await done;
  return { result, exitMs: performance.now() - signalled };
}

function assertInterrupted(r: Interrupted, what: string): void {
  const { result } = r;
  assert.equal(result.signal, null, `${what}: the process died by ${result.signal} instead of exiting 4; stderr: ${result.stderr}`);
  assert.equal(result.code, 4, `${what}: exit ${result.code} (0: it finished before the signal); stderr: ${result.stderr}`);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.at(-1), LINE, `${what}: stderr ends with the advice: ${result.stderr}`);
  assert.equal(lines.filter((l) => l === LINE).length, 1, `${what}: the advice once: ${result.stderr}`);
  assert.ok(r.exitMs < EXIT_BOUND_MS, `${what}: exited ${Math.round(r.exitMs)} ms after the signal`);
}

function assertOldOrNew(file: string, images: { old: string; fresh: string }, what: string): void {
  const h = fileHash(file);
  assert.ok(h === images.old || h === images.fresh, `${what}: ${path.basename(file)} is neither its old image nor the source's: torn`);
}

/** Reruns the interrupted command: it exits 0 and `dst` is the source's image, `fresh`. */
async function rerunMakesIdentical(args: string[], o: { config: string; dst: string; fresh: string; what: string }): Promise<void> {
  const again = await runCli(args, { config: o.config });
  assert.equal(again.code, 0, `${o.what}: rerun: ${again.stderr}`);
  assert.equal(fileHash(o.dst), o.fresh, `${o.what}: the rerun made it identical`);
}

/** How many of the listener's session lines for `name` say it did not commit. */
function failedSessions(listener: CliListener, name: string): number {
  return listener.stderr().split("\n").filter((l) => l.includes(`"${name}"`) && /: (failed|ended before commit)/.test(l)).length;
}

const CASES: { signals: NodeJS.Signals[] }[] = [{ signals: ["SIGINT"] }, { signals: ["SIGTERM"] }];

/** Each of `cases` in turn, ROUNDS times over, with its label. */
function everyRound(verb: string, cases: { signals: NodeJS.Signals[] }[]): { signals: NodeJS.Signals[]; what: string }[] {
  return Array.from({ length: ROUNDS }, (_, round) => cases.map(({ signals }) => ({ signals, what: `${verb}, ${signals.join("+")}, round ${round + 1}` }))).flat();
}

describe("signals on the clients: exit 4, the advice, a consistent destination", () => {
  test("the exit code and the one line: a signal, a lost connection, a broken peer", () => {
    assert.equal(exitCodeOf(new InterruptedError("SIGINT")), 4);
    assert.equal(describeError(new InterruptedError("SIGTERM")), ADVICE);
    assert.equal(describeError(new IncompleteSyncError("Lost the connection to h:1 before the sync was committed: reset")), `Lost the connection to h:1 before the sync was committed: reset: ${ADVICE}`);
    assert.equal(describeError(new ProtocolError("bad reply")), `bad reply: ${ADVICE}`);
    assert.equal(exitCodeOf(new IncompleteSyncError("x")), 4);
  });

  test("push: SIGINT and SIGTERM mid-transfer", { timeout: 150_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, root, listener, remote }) => {
      const src = path.join(dir, "vm.img");
      const dst = path.join(root, "vm.img");
      const images = makeImages(src, dst);
      for (const { signals, what } of everyRound("push", CASES)) {
        makeOld(dst);
        const failed = failedSessions(listener, "vm.img");
        const r = await interruptMidway(["push", "--accept-new", src, `${remote}:vm.img`], { config: client, watch: root, signals });
        assertInterrupted(r, what);
        // The listener's session ends (and lets go of the file) once it sees the client gone.
        await waitFor(() => failedSessions(listener, "vm.img") > failed, { timeoutMs: 10_000, what: "the listener's session line" });
        assertOldOrNew(dst, images, what);
        await rerunMakesIdentical(["push", src, `${remote}:vm.img`], { config: client, dst, fresh: images.fresh, what });
      }
    });
  });

  test("pull: SIGINT and SIGTERM mid-transfer", { timeout: 150_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, root, remote }) => {
      const local = path.join(dir, "local");
      fs.mkdirSync(local);
      const src = path.join(root, "vm.img");
      const dst = path.join(local, "vm.img");
      const images = makeImages(src, dst);
      for (const { signals, what } of everyRound("pull", CASES)) {
        makeOld(dst);
        const r = await interruptMidway(["pull", "--accept-new", `${remote}:vm.img`, dst], { config: client, watch: local, signals });
        assertInterrupted(r, what);
        assertOldOrNew(dst, images, what);
        await rerunMakesIdentical(["pull", `${remote}:vm.img`, dst], { config: client, dst, fresh: images.fresh, what });
      }
    });
  });

  test("sync: SIGINT, SIGTERM, and a second signal while it cleans up", { timeout: 150_000 }, async () => {
    await withTempDir(async (dir) => {
      const out = path.join(dir, "out");
      fs.mkdirSync(out);
      const src = path.join(dir, "vm.img");
      const dst = path.join(out, "vm.img");
      const images = makeImages(src, dst);
      const cases: { signals: NodeJS.Signals[] }[] = [...CASES, { signals: ["SIGINT", "SIGTERM"] }];
      for (const { signals, what } of everyRound("sync", cases)) {
        makeOld(dst);
        const r = await interruptMidway(["sync", src, dst], { config: dir, watch: out, signals });
        assertInterrupted(r, what);
        assertOldOrNew(dst, images, what);
        await rerunMakesIdentical(["sync", src, dst], { config: dir, dst, fresh: images.fresh, what });
      }
    });
  });

  test("the listener killed mid-push: exit 4, the lost connection and the advice", { timeout: 90_000 }, async () => {
    await withCliSetup({}, async ({ dir, client, root, listener, remote }) => {
      const src = path.join(dir, "vm.img");
      makeNew(src);
      const from = allocatedIn(root);
      const child = spawnCli(["push", "--accept-new", src, `${remote}:vm.img`], { config: client });
      const done = finished(child, 60_000);
      await waitForGrowth(root, { from, bytes: 16 * MiB, timeoutMs: 30_000, what: "data at the listener" });
      process.kill(listener.child.pid!, "SIGKILL");
      const r = await done;
      assert.equal(r.code, 4, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assert.match(lines.at(-1)!, new RegExp(`^ssync: Lost the connection to ${remote.replace(/\./g, "\\.")} before the sync was committed: .+: ${ADVICE}$`));
    });
  });
});
