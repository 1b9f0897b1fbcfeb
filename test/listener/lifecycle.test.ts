/**
 * A real `ssync listen` child (scripts/ssync) from start to stop (issue 7, "Why" 9):
 * 1. every --export is checked at start: missing, not a file or block device, unreadable
 *    (as user nobody) refuse the start, naming the export and why;
 * 2. SIGHUP re-reads authorized_keys and says so (a bad line is named, the others work),
 *    instead of killing the listener;
 * 3. SIGTERM stops accepting and lets a running session finish within the grace, then
 *    exits 0 with a log line;
 * 4. a session still running when the grace ends is cut, the listener exits 0, and the
 *    destination is completed by a rerun.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { dial } from "../../src/net/dial.ts";
import { IncompleteSyncError } from "../../src/util/errors.ts";
import { NOBODY, nobodyUnavailableReason } from "../helpers/as-nobody.ts";
import { fileHash, makeSparseFile } from "../helpers/sparse.ts";
import { serverOf, withListenerSetup } from "../helpers/listener-setup.ts";
import { authorize, type CliListener, clientSync, holdAtSend, makeKey, runCli, SSYNC, startCliListener, waitFor } from "../helpers/network.ts";

const T = { timeout: 60_000 };
const MiB = 1 << 20;
let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/**
 * Sends a signal by pid: Deno's ChildProcess.kill() sends only its first signal and then
 * reports the child as killed by it, whatever the child did with it.
 */
function signal(listener: CliListener, sig: NodeJS.Signals): void {
  process.kill(listener.child.pid!, sig);
}

/** Resolves with the exit code once the child exits; rejects after `ms`. */
function exitOf(listener: CliListener, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (listener.child.exitCode !== null) return resolve(listener.child.exitCode);
    const timer = setTimeout(() => reject(new Error(`ssync listen did not exit within ${ms} ms; stderr: ${listener.stderr()}`)), ms);
    listener.child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

test("every --export is checked at start: missing, a character device, a folder named with a /, unreadable refuse to start, naming it and why", T, async (t) => {
  await withListenerSetup(async ({ dir, config, root }) => {
    const file = path.join(dir, "disk.img");
    fs.writeFileSync(file, "");
    const cases: [string, RegExp][] = [
      [`blk=${path.join(dir, "nope")}`, /Cannot export blk=\S+nope: no such file or block device/],
      [`n=/dev/null`, /Cannot export n=\/dev\/null: a character device, not a regular file, block device or folder/],
      [`d/x=${dir}`, /Cannot export d\/x=\S+: a folder's export name must be one path component/],
    ];
    for (const [spec, why] of cases) {
      const r = await runCli(["listen", "--bind", "127.0.0.1:0", "--root", root, "--export", `ok=${file}`, "--export", spec], { config, timeoutMs: 20_000 });
      assert.equal(r.code, 2, `${spec}: ${r.stderr}`);
      assert.match(r.stderr, why);
      assert.doesNotMatch(r.stdout, /listening/);
    }
    const reason = nobodyUnavailableReason();
    if (reason) return t.skip(`unreadable export: ${reason}`);
    // As user nobody, a file only root may read.
    const secret = path.join(dir, "secret.img");
    fs.writeFileSync(secret, "x", { mode: 0o600 });
    const home = path.join(dir, "nobody-home");
    fs.mkdirSync(home);
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(root, 0o755);
    for (const p of [home, path.join(config, "ssync"), path.join(config, "ssync", "authorized_keys")]) fs.chownSync(p, NOBODY, NOBODY);
    const r = spawnSync(SSYNC, ["listen", "--bind", "127.0.0.1:0", "--root", root, "--export", `s=${secret}`], {
      uid: NOBODY,
      gid: NOBODY,
      env: { PATH: process.env.PATH, HOME: home, DENO_DIR: path.join(home, "deno-cache"), XDG_CONFIG_HOME: config },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /Cannot export s=\S+secret\.img: permission denied: the listener cannot read it/);
  });
});

test("SIGHUP re-reads authorized_keys and says so; a bad line is named; the listener keeps serving", T, async () => {
  await withListenerSetup(async ({ dir, config, root, authorizedKeys, knownHosts }) => {
    const listener = await startCliListener(["--root", root], { config });
    try {
      const later = await makeKey(path.join(dir, "later_key"));
      authorize(authorizedKeys, later);
      fs.appendFileSync(authorizedKeys, "ssync-x25519 not-a-key oops\n", { mode: 0o600 });
      fs.chmodSync(authorizedKeys, 0o600); // Deno's append may widen the mode
      signal(listener, "SIGHUP");
      await waitFor(() => /re-read 2 keys from \S+authorized_keys/.test(listener.stderr()), { timeoutMs: 10_000, what: "the re-read line" })
        .catch((e) => assert.fail(`${e.message}; exit ${listener.child.exitCode} ${listener.child.signalCode}; stderr: ${listener.stderr()}`));
      assert.match(listener.stderr(), /authorized_keys line 3/);
      assert.equal(listener.child.exitCode, null, "still running");
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 65536 }] });
      await clientSync(serverOf(listener), { mode: "push", local: src, name: "after-hup.img", key: later, pool, knownHosts });
      assert.equal(fileHash(path.join(root, "after-hup.img")), fileHash(src));
    } finally {
      await listener.stop();
    }
  });
});

test("SIGTERM: no new connections; a running session finishes within the grace; exit 0 with a log line", T, async () => {
  await withListenerSetup(async ({ dir, config, root, key, knownHosts }) => {
    const listener = await startCliListener(["--root", root, "--shutdown-grace", "20"], { config });
    try {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 8 * MiB, chunks: [{ offset: 0, length: 4 * MiB, seed: 5 }] });
      // Held right after OPEN_OK: the session is running when the signal comes.
      const hold = holdAtSend(2);
      const push = clientSync(serverOf(listener), { mode: "push", local: src, name: "graceful.img", key, pool, knownHosts, wrap: hold.wrap });
      push.catch(() => {});
      await hold.reached;
      signal(listener, "SIGTERM");
      await waitFor(() => /SIGTERM: stopping/.test(listener.stderr()), { timeoutMs: 10_000, what: "the stopping line" });
      await assert.rejects(
        dial({ host: "127.0.0.1", port: listener.port, staticKey: key, knownHostsFile: knownHosts, acceptNew: true, timeoutMs: 2000 }),
        /connection refused/,
      );
      hold.release();
      await push;
      assert.equal(fileHash(path.join(root, "graceful.img")), fileHash(src));
      const code = await exitOf(listener, 15_000);
      assert.equal(code, 0, `signal ${listener.child.signalCode}; stderr: ${listener.stderr()}`);
      assert.match(listener.stderr(), /SIGTERM: stopped \(1 session running at the signal, 0 cut\)/);
    } finally {
      await listener.stop();
    }
  });
});

test("a session still running when the grace ends is cut; the listener exits 0; a rerun completes the file", T, async () => {
  await withListenerSetup(async ({ dir, config, root, key, knownHosts }) => {
    const listener = await startCliListener(["--root", root, "--shutdown-grace", "0.5"], { config });
    const src = path.join(dir, "src.img");
    makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 8 * MiB, seed: 6 }] });
    try {
      // Held at its 3rd DATA: some data is at the listener, the rest is not.
      const hold = holdAtSend(3, { type: "DATA" });
      const push = clientSync(serverOf(listener), { mode: "push", local: src, name: "cut.img", key, pool, knownHosts, wrap: hold.wrap });
      const outcome = push.then(() => undefined, (e: Error) => e);
      await hold.reached;
      signal(listener, "SIGINT");
      assert.equal(await exitOf(listener, 10_000), 0);
      assert.match(listener.stderr(), /SIGINT: stopped \(1 session running at the signal, 1 cut\)/);
      hold.release();
      const error = await outcome;
      assert.ok(error instanceof IncompleteSyncError, String(error));
    } finally {
      await listener.stop();
    }
    const again = await startCliListener(["--root", root], { config });
    try {
      await clientSync(serverOf(again), { mode: "push", local: src, name: "cut.img", key, pool, knownHosts });
      assert.equal(fileHash(path.join(root, "cut.img")), fileHash(src));
    } finally {
      await again.stop();
    }
  });
});
