/**
 * Progress a person can watch, through the real CLI (scripts/ssync as child processes):
 * 1. the live line in a terminal (tmux): it updates during a multi-second push through a slow
 *    relay, and only the summary remains;
 * 2. `--progress` off a terminal still draws the line (carriage returns), and clears it;
 * 3. `--progress=json`: NDJSON events that count up to the total, push (with --verify) and pull;
 * 4. `-q`: nothing on success (not even a warning), the error on failure;
 * 5. the listener's progress line per running session (`--progress-interval`);
 * 6. the parsing of `--progress` (a bare one never takes the next argument).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { attachProgressValue, parseProgress, progressFormat } from "../src/cli/progress-mode.ts";
import { clock, ProgressLine } from "../src/cli/progress-line.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { finished, REPO, runCli, spawnCli, SSYNC, startCliListener, waitFor } from "./helpers/network.ts";
import { SlowRelay } from "./helpers/slow-relay.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import type { ProgressEvent } from "../src/cli/progress-json.ts";

const run = promisify(execFile);
const MiB = 1 << 20;
const GiB = 1 << 30;

/** A sparse image with `dataMiB` of random data (incompressible) after a hole. */
function makeImage(file: string, o: { size: number; dataMiB: number }): void {
  makeSparseFile(file, { size: o.size, chunks: [{ offset: 64 * MiB, length: o.dataMiB * MiB, fill: "random" }] });
}

function tmuxMissing(): string | false {
  const r = spawnSync("tmux", ["-V"], { encoding: "utf8" });
  return r.status === 0 ? false : "tmux is not installed: cannot drive a terminal (apt-get install tmux)";
}

/** Every stderr line is an event; per phase, bytesCompared never decreases and the last one is final at the total. */
function checkEvents(stderr: string, o: { size: number; phases: string[] }): Map<string, ProgressEvent[]> {
  const lines = stderr.split("\n").filter((l) => l !== "");
  const events = lines.map((l) => JSON.parse(l) as ProgressEvent);
  const byPhase = new Map<string, ProgressEvent[]>();
  for (const e of events) {
    assert.equal(e.event, "progress");
    assert.equal(e.schema, 1);
    assert.equal(e.bytesTotal, o.size);
    assert.ok(e.bytesCompared <= e.bytesTotal);
    byPhase.set(e.phase, [...(byPhase.get(e.phase) ?? []), e]);
  }
  assert.deepEqual([...byPhase.keys()], o.phases);
  for (const [phase, list] of byPhase) {
    for (let i = 1; i < list.length; i++) assert.ok(list[i].bytesCompared >= list[i - 1].bytesCompared, `${phase}: counts up`);
    const last = list[list.length - 1];
    assert.equal(last.final, true, `${phase}: a final event`);
    assert.equal(list.filter((e) => e.final).length, 1, `${phase}: one final event`);
    assert.equal(last.bytesCompared, o.size, `${phase}: up to the total`);
    assert.equal(last.etaSeconds, 0);
  }
  return byPhase;
}

describe("progress", () => {
  test(
    "in a terminal (tmux): the line updates during a multi-second push and only the summary remains",
    { timeout: 120_000, skip: tmuxMissing() },
    async () => {
      await withCliSetup({ pinHostKey: true }, async ({ dir, client, listener, root }) => {
        const src = path.join(dir, "vm.img");
        // 64 MiB at 16 MiB/s: about 4 s on the wire. More than the client's 32 MiB DATA window:
        // a range counts as compared once its RANGE_DONE is acknowledged, and that request waits
        // behind the DATA queued before it, so with less data than the window every data range
        // would settle only at the very end.
        makeImage(src, { size: 1 * GiB, dataMiB: 64 });
        await using relay = await SlowRelay.start(listener.port, { upBytesPerSecond: 16 * MiB });
        const socket = `ssync-progress-${process.pid}`;
        const tmux = (...args: string[]) => run("tmux", ["-L", socket, ...args], { encoding: "utf8" });
        const command = `cd ${REPO} && XDG_CONFIG_HOME=${client} SSYNC_WORKERS=2 ${SSYNC} push --accept-new --compress never ` +
          `${src} 127.0.0.1:${relay.port}:vm.img; echo EXIT=$?; sleep 120`;
        await tmux("new-session", "-d", "-s", "p", "-x", "120", "-y", "20", command);
        try {
          const seen: string[] = [];
          let pane = "";
          const end = Date.now() + 90_000;
          while (!/EXIT=\d+/.test(pane)) {
            assert.ok(Date.now() < end, `no end of the push in the pane:\n${pane}`);
            pane = (await tmux("capture-pane", "-p", "-t", "p")).stdout;
            const line = pane.split("\n").find((l) => / ETA /.test(l));
            if (line !== undefined && seen[seen.length - 1] !== line) seen.push(line.trimEnd());
            await new Promise((r) => setTimeout(r, 150));
          }
          const rows = pane.split("\n").map((l) => l.trimEnd()).filter((l) => l !== "");
          assert.equal(rows[rows.length - 1], "EXIT=0", pane);
          // Only the summary: its first line, then its indented lines, then our EXIT line.
          assert.match(rows[0], /vm\.img -> 127\.0\.0\.1:\d+:vm\.img: now identical/, pane);
          assert.ok(rows.slice(1, -1).every((l) => l.startsWith("  ")), pane);
          assert.ok(!/ETA/.test(pane), `the line is cleared:\n${pane}`);
          // It updated: several lines, the compared count going up, each with rate, sent and changed.
          assert.ok(seen.length >= 3, `only ${seen.length} distinct progress lines: ${seen.join(" | ")}`);
          for (const l of seen) {
            assert.match(l, /^\S+ \S+ \/ 1\.0 GiB \(\d+%\) {2}\S+ \S+\/s {2}ETA (--:--|\d+:\d\d) {2}sent \S+ \S+ {2}changed \S+ \S+$/, l);
            assert.ok(l.length < 120, "fits the terminal");
          }
          const percents = new Set(seen.map((l) => /\((\d+)%\)/.exec(l)![1]));
          assert.ok(percents.size >= 2, `the compared count moves: ${seen.join(" | ")}`);
          assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
        } finally {
          await tmux("kill-server").catch(() => {});
        }
      });
    },
  );

  test("--progress off a terminal: the line is drawn with carriage returns and cleared; nothing without it", { timeout: 120_000 }, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      makeImage(src, { size: 2 * GiB, dataMiB: 200 });
      const forced = await runCli(["sync", "--progress", src, path.join(dir, "a.img")], { config: dir });
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stdout, /now identical/);
      assert.ok(forced.stderr.includes("\r"), JSON.stringify(forced.stderr));
      const drawn = forced.stderr.split("\r").filter((s) => s.trim() !== "");
      assert.ok(drawn.length >= 1, JSON.stringify(forced.stderr));
      for (const l of drawn) assert.match(l.trimEnd(), /^\S+ \S+ \/ 2\.0 GiB \(\d+%\) {2}\S+ \S+\/s {2}ETA \S+ {2}changed \S+ \S+$/); // no "sent": local
      assert.ok(forced.stderr.endsWith("\r") && forced.stderr.split("\r").at(-2)!.trim() === "", "cleared at the end");
      const plain = await runCli(["sync", src, path.join(dir, "b.img")], { config: dir });
      assert.equal(plain.code, 0, plain.stderr);
      assert.equal(plain.stderr, "");
      const bad = await runCli(["sync", "--progress=bar", src, path.join(dir, "c.img")], { config: dir });
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /Invalid --progress=bar: use --progress .* or --progress=json/);
    });
  });

  test("Ctrl-C: the line is cleared before the interruption is said; JSON gets its final event", { timeout: 120_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, listener }) => {
      const src = path.join(dir, "vm.img");
      makeImage(src, { size: 1 * GiB, dataMiB: 32 });
      await using relay = await SlowRelay.start(listener.port, { upBytesPerSecond: 2 * MiB });
      for (const progress of ["--progress", "--progress=json"]) {
        const child = spawnCli(["push", "--accept-new", "--compress", "never", progress, src, `127.0.0.1:${relay.port}:vm.img`], { config: client });
        let stderr = "";
        child.stderr!.on("data", (c) => (stderr += c));
        const done = finished(child, 60_000);
        await waitFor(() => /ETA|"final":false/.test(stderr), { timeoutMs: 30_000, what: "a progress line" });
        process.kill(child.pid!, "SIGINT"); // not child.kill(): under Deno that reports the signal, not the exit code
        const r = await done;
        assert.equal(r.code, 4, stderr);
        const all = r.stderr;
        assert.ok(all.endsWith("ssync: interrupted: rerun the same command to complete it\n"), JSON.stringify(all.slice(-300)));
        const before = all.slice(0, all.lastIndexOf("ssync: interrupted"));
        if (progress === "--progress") assert.match(before, /\r *\r$/, "the line was blanked, the cursor at its start");
        else assert.equal(JSON.parse(before.trim().split("\n").at(-1)!).final, true);
      }
    });
  });

  test("--progress=json: events parse and count up to the total; push with --verify, and pull", { timeout: 180_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, listener, root }) => {
      const size = 1 * GiB;
      const src = path.join(dir, "vm.img");
      makeImage(src, { size, dataMiB: 16 });
      await using relay = await SlowRelay.start(listener.port, { upBytesPerSecond: 6 * MiB, downBytesPerSecond: 6 * MiB });
      const remote = `127.0.0.1:${relay.port}:vm.img`;

      const push = await runCli(["push", "--accept-new", "--compress", "never", "--json", "--verify", "--progress=json", src, remote], { config: client });
      assert.equal(push.code, 0, push.stderr);
      const summary = JSON.parse(push.stdout);
      const pushed = checkEvents(push.stderr, { size, phases: ["sync", "verify"] });
      const sync = pushed.get("sync")!;
      assert.ok(sync.length >= 2, `one event a second during a ~3 s push: ${sync.length}`);
      assert.ok(sync.some((e) => !e.final && e.bytesCompared < size), "an event before the end");
      const last = sync[sync.length - 1];
      assert.equal(last.bytesChanged, summary.dataBytesSent + summary.zeroBytesSent);
      assert.ok(last.wireBytesSent! >= 16 * MiB && last.wireBytesSent! <= summary.wireBytesSent, `${last.wireBytesSent}`);
      assert.equal(pushed.get("verify")!.at(-1)!.bytesChanged, 0);
      assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));

      const local = path.join(dir, "pulled.img");
      const pull = await runCli(["pull", "--accept-new", "--compress", "never", "--progress=json", remote, local], { config: client });
      assert.equal(pull.code, 0, pull.stderr);
      assert.match(pull.stdout, /now identical/);
      const pulled = checkEvents(pull.stderr, { size, phases: ["sync"] }).get("sync")!;
      assert.ok(pulled.length >= 2, `${pulled.length} events`);
      assert.equal(pulled.at(-1)!.bytesChanged, 16 * MiB);
      assert.ok(pulled.at(-1)!.wireBytesSent! > 0);
      assert.equal(fileHash(local), fileHash(src));
    });
  });

  test("-q: nothing on success, not even a warning; the error on failure", { timeout: 120_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, remote }) => {
      const src = path.join(dir, "vm.img");
      makeImage(src, { size: 256 * MiB, dataMiB: 4 });
      // A line known_hosts cannot read: a warning, without -q.
      fs.appendFileSync(path.join(client, "ssync", "known_hosts"), "not a known_hosts line\n", { mode: 0o600 }); // Deno: 0666 without a mode
      const loud = await runCli(["push", src, `${remote}:loud.img`], { config: client });
      assert.equal(loud.code, 0, loud.stderr);
      assert.match(loud.stderr, /warning/);
      assert.match(loud.stdout, /now identical/);

      for (const args of [["push", "-q", src, `${remote}:quiet.img`], ["pull", "--quiet", `${remote}:quiet.img`, path.join(dir, "back.img")]]) {
        const r = await runCli(args, { config: client });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "", args.join(" "));
        assert.equal(r.stderr, "", args.join(" "));
      }
      const sync = await runCli(["sync", "-q", src, path.join(dir, "copy.img")], { config: client });
      assert.deepEqual([sync.code, sync.stdout, sync.stderr], [0, "", ""]);
      assert.equal(fileHash(path.join(dir, "copy.img")), fileHash(src));
      // --json is still printed: a script asked for it.
      const json = await runCli(["sync", "-q", "--json", src, path.join(dir, "copy.img")], { config: client });
      assert.equal(json.stderr, "");
      assert.equal(JSON.parse(json.stdout).ok, true);

      const missing = await runCli(["sync", "-q", path.join(dir, "nope.img"), path.join(dir, "x.img")], { config: client });
      assert.equal(missing.code, 1);
      assert.equal(missing.stdout, "");
      assert.match(missing.stderr, /^ssync: Cannot open .*nope\.img: no such file/);
      const refused = await runCli(["push", "-q", src, `${remote}:../escape.img`], { config: client });
      assert.notEqual(refused.code, 0);
      assert.equal(refused.stdout, "");
      assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
      assert.match(refused.stderr, /^ssync: /);
    });
  });

  test("the listener logs a progress line per running session (--progress-interval)", { timeout: 120_000 }, async () => {
    await withCliSetup({ pinHostKey: true, listenArgs: ["--progress-interval", "1"] }, async ({ dir, client, listener }) => {
      const src = path.join(dir, "vm.img");
      makeImage(src, { size: 1 * GiB, dataMiB: 16 });
      await using relay = await SlowRelay.start(listener.port, { upBytesPerSecond: 6 * MiB });
      const r = await runCli(["push", "--accept-new", "--compress", "never", src, `127.0.0.1:${relay.port}:vm.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      const lines = listener.stderr().split("\n");
      const progress = lines.filter((l) => /in progress/.test(l));
      assert.ok(progress.length >= 1, listener.stderr());
      for (const l of progress) {
        assert.match(
          l,
          /127\.0\.0\.1:\d+ key SHA256:\S+ push "vm\.img": in progress: compared [\d.]+ (B|KiB|MiB|GiB) of 1\.0 GiB \(\d+%\), [\d.]+ MB\/s, changed [\d.]+ (B|KiB|MiB|GiB), wire in [\d.]+ (B|KiB|MiB|GiB) out [\d.]+ (B|KiB|MiB|GiB)$/,
        );
      }
      // And the summary line at the end, after them.
      const summary = lines.findIndex((l) => /push "vm\.img".*: ok$/.test(l));
      assert.ok(summary > lines.indexOf(progress[progress.length - 1]), listener.stderr());
    });
  });

  test("a listener logs no progress line for a session shorter than its interval (default a minute)", { timeout: 60_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, remote, listener }) => {
      const src = path.join(dir, "vm.img");
      makeImage(src, { size: 64 * MiB, dataMiB: 1 });
      const r = await runCli(["push", src, `${remote}:vm.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(listener.stderr(), /in progress/);
      const bad = await startCliListener(["--root", dir, "--progress-interval", "soon"], { config: client }).then(
        (l) => l.stop().then(() => "started"),
        (e: Error) => e.message,
      );
      assert.match(bad, /Invalid --progress-interval soon/);
    });
  });

  test("--progress parsing: a bare one takes no argument; values after = only", () => {
    assert.deepEqual(attachProgressValue(["push", "--progress", "vm.img", "h:"]), ["push", "--progress=line", "vm.img", "h:"]);
    assert.deepEqual(attachProgressValue(["push", "--progress=json", "a", "--", "--progress"]), ["push", "--progress=json", "a", "--", "--progress"]);
    assert.equal(parseProgress(undefined), "auto");
    assert.equal(parseProgress(true), "line");
    assert.equal(parseProgress("line"), "line");
    assert.equal(parseProgress("json"), "json");
    assert.equal(parseProgress(false), "none");
    assert.throws(() => parseProgress("yes"), /Invalid --progress=yes/);
    assert.equal(progressFormat("auto", { quiet: false, isTTY: true }), "line");
    assert.equal(progressFormat("auto", { quiet: true, isTTY: true }), undefined);
    assert.equal(progressFormat("auto", { quiet: false, isTTY: false }), undefined);
    assert.equal(progressFormat("json", { quiet: true, isTTY: false }), "json");
    assert.equal(clock(59.2), "1:00");
    assert.equal(clock(3725), "1:02:05");
  });

  test("the line is redrawn over itself, cut to the terminal, and blanked at the end", () => {
    let out = "";
    const line = new ProgressLine({ write: (t: string) => (out += t), columns: 10 });
    line.draw("0123456789abc");
    line.draw("0123456789abc"); // unchanged: not written again
    line.draw("xy");
    line.clear();
    line.clear();
    // A shorter line blanks what the longer one left; the clear blanks what is shown.
    assert.equal(out, "\r012345678" + "\rxy       " + "\r  \r");
  });
});
