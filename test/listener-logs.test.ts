/**
 * What a real `ssync listen` child (scripts/ssync) writes, as an admin or a collector reads it
 * (issue 10, scope 4):
 * 1. one stream: stdout holds only the listening line (for scripts), every log line is on
 *    stderr with its own time; byte counts in human units; no per-connection detail by default;
 * 2. --log-format json -v: every stderr line is one JSON object (time, level, message, the
 *    event's fields: peer, key, file, byte counts); warnings have level "warn"; -v adds the
 *    per-connection events (authenticated, open);
 * 3. under journald (JOURNAL_STREAM names its stderr): no own time, a syslog priority on each
 *    line; a JOURNAL_STREAM naming some other stream changes nothing;
 * 4. SIGHUP logs each key added, removed or changed, by fingerprint, then "no change";
 * 5. a second SIGTERM during the grace cuts the running session at once (exit 0, "1 cut").
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { fingerprint } from "../src/trust/keys.ts";
import { authorize, type CliListener, clientSync, holdAtSend, makeKey, SSYNC, startCliListener, waitFor } from "./helpers/network.ts";
import { fileHash, makeSparseFile } from "./helpers/sparse.ts";
import { exitOf, type ListenerSetup, serverOf, withListenerSetup } from "./helpers/listener-setup.ts";

const T = { timeout: 60_000 };
const MiB = 1 << 20;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z /;
let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** A 4 MiB image with 1.5 MiB of data: its push writes 1.5 MiB. */
function image(dir: string): string {
  const src = path.join(dir, "src.img");
  makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: 0, length: MiB, seed: 1 }, { offset: 2 * MiB, length: MiB / 2, seed: 2 }] });
  return src;
}

/** Deno's ChildProcess.kill() sends only its first signal: signal by pid. */
function signal(child: ChildProcess, sig: NodeJS.Signals): void {
  process.kill(child.pid!, sig);
}


const sessionLine = (log: string, name: string) => log.split("\n").find((l) => l.includes(`push "${name}"`) && /: (ok|failed)/.test(l));

test("one stream: stdout holds only the listening line; log lines on stderr with their time, byte counts in human units", T, async () => {
  await withListenerSetup(async ({ dir, config, root, key, knownHosts }) => {
    const listener = await startCliListener(["--root", root], { config });
    try {
      const src = image(dir);
      await clientSync(serverOf(listener), { mode: "push", local: src, name: "vm.img", key, pool, knownHosts });
      assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
      await waitFor(() => sessionLine(listener.stderr(), "vm.img") !== undefined, { timeoutMs: 10_000, what: "the session line" });
      const line = sessionLine(listener.stderr(), "vm.img")!;
      assert.match(line, ISO);
      assert.match(line, /127\.0\.0\.1:\d+ key SHA256:\S+ push "vm\.img": read 0 B, wrote 1\.5 MiB, holes 0 B, wire in [\d.]+ (B|KiB|MiB) out [\d.]+ (B|KiB|MiB), [\d.]+ s: ok$/);
      assert.match(listener.stderr(), /listening on 127\.0\.0\.1:\d+ host key SHA256:\S+: root /, "the log names the address and host key too");
      for (const l of listener.stderr().trim().split("\n")) assert.match(l, ISO, `every log line has its time: ${l}`);
      assert.doesNotMatch(listener.stderr(), /authenticated|debug:/, "no per-connection detail without -v");
    } finally {
      await listener.stop();
    }
    assert.equal(listener.stdoutLines.join(""), "", "stdout holds nothing after the listening line");
  });
});

test("--log-format json -v: one object per line with time, level, message and the event's fields", T, async () => {
  await withListenerSetup(async ({ dir, config, root, authorizedKeys, key, knownHosts }) => {
    fs.appendFileSync(authorizedKeys, "ssync-x25519 not-a-key oops\n");
    fs.chmodSync(authorizedKeys, 0o600); // Deno's append may widen the mode
    const listener = await startCliListener(["--root", root, "--log-format", "json", "-v"], { config });
    try {
      await clientSync(serverOf(listener), { mode: "push", local: image(dir), name: "vm.img", key, pool, knownHosts });
      await waitFor(() => /"bytesWritten"/.test(listener.stderr()), { timeoutMs: 10_000, what: "the session entry" });
    } finally {
      await listener.stop();
    }
    const entries = listener.stderr().trim().split("\n").map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return assert.fail(`not one JSON object: ${l}`);
      }
    });
    for (const e of entries) {
      assert.ok(typeof e.time === "string" && !Number.isNaN(Date.parse(e.time)), JSON.stringify(e));
      assert.ok(["error", "warn", "info", "debug"].includes(e.level as string), JSON.stringify(e));
      assert.equal(typeof e.message, "string");
    }
    const fp = fingerprint(key.publicKey);
    const session = entries.find((e) => e.bytesWritten !== undefined)!;
    assert.equal(session.level, "info");
    assert.equal(session.key, fp);
    assert.equal(session.file, "vm.img");
    assert.equal(session.mode, "push");
    assert.equal(session.bytesWritten, 1.5 * MiB);
    assert.equal(session.ok, true);
    assert.match(session.peer as string, /^127\.0\.0\.1:\d+$/);
    assert.equal(typeof session.wireBytesIn, "number");
    const warning = entries.find((e) => /authorized_keys line 2/.test(e.message as string));
    assert.equal(warning?.level, "warn", JSON.stringify(entries));
    assert.ok(entries.some((e) => e.level === "debug" && e.key === fp && /authenticated/.test(e.message as string)), "-v: the authenticated key");
    assert.ok(entries.some((e) => e.level === "debug" && e.file === "vm.img" && /open push/.test(e.message as string)), "-v: the path opened");
    assert.ok(entries.some((e) => e.signal === "SIGTERM" && e.sessions === 0), "the stop entry");
  });
});

/**
 * Runs `ssync listen` with its stderr appended to `errFile` (made first, so `env` can name its
 * device and inode) until `during` resolves, then SIGTERM; returns what it wrote there.
 */
async function listenWithStderrFile(
  s: ListenerSetup,
  errFile: string,
  env: (st: fs.Stats) => Record<string, string>,
  during: (port: number) => Promise<void>,
): Promise<string> {
  fs.writeFileSync(errFile, "");
  // sh execs ssync (and scripts/ssync execs its runtime): the child's pid is the listener's.
  const child = spawn("sh", ["-c", 'exec "$0" listen --bind 127.0.0.1:0 --root "$1" 2>>"$2"', SSYNC, s.root, errFile], {
    env: { ...process.env, XDG_CONFIG_HOME: s.config, SSYNC_WORKERS: "2", ...env(fs.statSync(errFile)) },
    stdio: ["ignore", "pipe", "ignore"],
  });
  try {
    let out = "";
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`ssync listen did not start: ${fs.readFileSync(errFile, "utf8")}`)), 20_000);
      child.once("close", (code) => reject(new Error(`ssync listen exited with ${code}: ${fs.readFileSync(errFile, "utf8")}`)));
      child.stdout!.on("data", (c) => {
        out += c;
        const m = /^ssync listening on 127\.0\.0\.1:(\d+) /.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
    });
    await during(port);
    signal(child, "SIGTERM");
    assert.equal(await exitOf(child, 15_000), 0);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
  return fs.readFileSync(errFile, "utf8");
}

test("under journald (JOURNAL_STREAM names stderr): no own time, a syslog priority per line; another stream's value changes nothing", T, async () => {
  await withListenerSetup(async (s) => {
    fs.appendFileSync(s.authorizedKeys, "ssync-x25519 not-a-key oops\n");
    fs.chmodSync(s.authorizedKeys, 0o600);
    const errFile = path.join(s.dir, "stderr.log");
    const journal = await listenWithStderrFile(s, errFile, (st) => ({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }), async (port) => {
      await clientSync(serverOf({ port }), { mode: "push", local: image(s.dir), name: "vm.img", key: s.key, pool, knownHosts: s.knownHosts });
      await waitFor(() => sessionLine(fs.readFileSync(errFile, "utf8"), "vm.img") !== undefined, { timeoutMs: 10_000, what: "the session line" });
    });
    const lines = journal.trim().split("\n");
    for (const l of lines) {
      assert.match(l, /^<[3-7]>/, `a syslog priority: ${l}`);
      assert.doesNotMatch(l.slice(3), ISO, `no own time: ${l}`);
    }
    assert.ok(lines.some((l) => /^<4>warning: .*authorized_keys line 2/.test(l)), journal);
    assert.ok(lines.some((l) => /^<6>127\.0\.0\.1:\d+ key \S+ push "vm\.img": .*: ok$/.test(l)), journal);

    // Inherited from a service that runs us with stderr elsewhere: not journald's stream.
    const elsewhere = await listenWithStderrFile(s, path.join(s.dir, "stderr2.log"), () => ({ JOURNAL_STREAM: "1:1" }), async () => {});
    for (const l of elsewhere.trim().split("\n")) assert.match(l, ISO, l);
  });
});

test("SIGHUP logs each key added, removed or changed, by fingerprint; then no change", T, async () => {
  await withListenerSetup(async ({ dir, config, root, authorizedKeys, key: a }) => {
    const b = await makeKey(path.join(dir, "b_key"));
    const c = await makeKey(path.join(dir, "c_key"));
    authorize(authorizedKeys, b);
    const listener: CliListener = await startCliListener(["--root", root], { config });
    try {
      fs.writeFileSync(authorizedKeys, "", { mode: 0o600 });
      authorize(authorizedKeys, b, { options: "read-only" });
      authorize(authorizedKeys, c);
      fs.chmodSync(authorizedKeys, 0o600);
      signal(listener.child, "SIGHUP");
      await waitFor(() => /re-read 2 keys from \S+: 1 added, 1 removed, 1 changed/.test(listener.stderr()), { timeoutMs: 10_000, what: "the re-read line" })
        .catch((e) => assert.fail(`${e.message}: ${listener.stderr()}`));
      await waitFor(() => /authorized key changed/.test(listener.stderr()), { timeoutMs: 5000, what: "the per-key lines" });
      const log = listener.stderr();
      assert.match(log, new RegExp(`authorized key added: ${escape(fingerprint(c.publicKey))}`));
      assert.match(log, new RegExp(`authorized key removed: ${escape(fingerprint(a.publicKey))}`));
      assert.match(log, new RegExp(`authorized key changed: ${escape(fingerprint(b.publicKey))} \\(read-only`));
      signal(listener.child, "SIGHUP");
      await waitFor(() => /re-read 2 keys from \S+: no change/.test(listener.stderr()), { timeoutMs: 10_000, what: "the second re-read line" });
    } finally {
      await listener.stop();
    }
  });
});

test("a second SIGTERM during the grace cuts the running session at once; exit 0; a rerun completes the file", T, async () => {
  await withListenerSetup(async ({ dir, config, root, key, knownHosts }) => {
    const listener = await startCliListener(["--root", root, "--shutdown-grace", "60"], { config });
    const src = path.join(dir, "src.img");
    makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 8 * MiB, seed: 7 }] });
    try {
      const hold = holdAtSend(3, { type: "DATA" });
      const push = clientSync(serverOf(listener), { mode: "push", local: src, name: "cut.img", key, pool, knownHosts, wrap: hold.wrap });
      const outcome = push.then(() => undefined, (e: Error) => e);
      await hold.reached;
      signal(listener.child, "SIGTERM");
      await waitFor(() => /SIGTERM: stopping/.test(listener.stderr()), { timeoutMs: 10_000, what: "the stopping line" });
      const t0 = Date.now();
      signal(listener.child, "SIGTERM");
      assert.equal(await exitOf(listener.child, 10_000), 0);
      assert.ok(Date.now() - t0 < 10_000, "not the 60 s grace");
      assert.match(listener.stderr(), /SIGTERM: stopped \(1 session running at the signal, 1 cut\)/);
      hold.release();
      assert.ok((await outcome) instanceof Error);
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

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}
