// Processes for the bench: run one (wall time, peak RSS), run several at once, drop the page
// cache, medians. Every child is tracked so that an exit (or Ctrl-C) kills what is left.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export const GNU_TIME = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : "";

/** Children still running: killed by killAll() (exit, Ctrl-C). */
const live = new Set();

export function killAll() {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }
  live.clear();
}

let rssSeq = 0;

/**
 * Runs `cmd args` to completion. Returns wall seconds (spawn to exit), peak RSS in KiB of the
 * process (GNU time %M; else VmHWM polled from /proc), and stdout. A non-zero exit throws with
 * the command's stderr. `timeoutMs` bounds it (SIGKILL, then throws).
 */
export async function run(cmd, args, { env, timeoutMs = 3_600_000, tmp = os.tmpdir() } = {}) {
  const rssFile = path.join(tmp, `bench-rss-${process.pid}-${rssSeq++}.txt`);
  const [file, argv] = GNU_TIME ? [GNU_TIME, ["-f", "%M", "-o", rssFile, cmd, ...args]] : [cmd, args];
  const started = process.hrtime.bigint();
  const child = spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
  live.add(child);
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err = (err + d).slice(-20_000)));
  let hwm = 0;
  const poll = GNU_TIME ? null : setInterval(() => (hwm = Math.max(hwm, vmHWM(child.pid))), 20);
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise((resolve) => {
    child.on("error", (e) => {
      err += String(e);
      resolve(-1);
    });
    child.on("close", (c, sig) => resolve(c ?? sig));
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  live.delete(child);
  clearTimeout(timer);
  if (poll) clearInterval(poll);
  if (GNU_TIME) {
    try {
      const lines = fs.readFileSync(rssFile, "utf8").trim().split("\n");
      hwm = Number(lines.at(-1)) || 0;
    } catch { /* time failed to start the command */ }
    fs.rmSync(rssFile, { force: true });
  }
  if (code !== 0) throw new Error(`${[cmd, ...args].join(" ")} exited ${code}: ${err.trim().slice(-2000)}`);
  return { seconds, rssKiB: hwm, stdout: out, stderr: err };
}

/** Runs every command at once; wall seconds until the last ends, RSS the largest. */
export async function runAll(cmds, options) {
  const started = process.hrtime.bigint();
  const rs = await Promise.all(cmds.map(([cmd, args]) => run(cmd, args, options)));
  return {
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
    rssKiB: Math.max(...rs.map((r) => r.rssKiB)),
    stdout: rs.map((r) => r.stdout).join(""),
  };
}

/** VmHWM (peak RSS, KiB) of a running process; 0 when it is gone. */
export function vmHWM(pid) {
  try {
    const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** A long-running child (a listener): its stdout lines are searched by waitFor. */
export function spawnDaemon(cmd, args, { env } = {}) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env });
  live.add(child);
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out = (out + d).slice(-20_000)));
  child.stderr.on("data", (d) => (err = (err + d).slice(-20_000)));
  const exited = new Promise((resolve) => child.on("close", (c, s) => resolve(c ?? s)));
  exited.then(() => live.delete(child));
  return {
    child,
    exited,
    output: () => out,
    errors: () => err,
    /** Resolves with the first match of `re` in stdout; rejects on exit or after timeoutMs. */
    waitFor(re, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => done(new Error(`${cmd}: no ${re} within ${timeoutMs} ms: ${err.trim()}`)), timeoutMs);
        const check = () => {
          const m = re.exec(out);
          if (m) done(null, m);
        };
        const onExit = (c) => done(new Error(`${cmd} ${args.join(" ")} exited ${c}: ${err.trim()}`));
        function done(e, m) {
          clearTimeout(timer);
          child.stdout.off("data", check);
          exited.then(null, () => {});
          if (e) reject(e);
          else resolve(m);
        }
        child.stdout.on("data", check);
        exited.then(onExit);
        check();
      });
    },
    /** SIGTERM, then SIGKILL after graceMs; resolves when it has exited. */
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Drops the page cache: `echo 3 > /proc/sys/vm/drop_caches` as root, else posix_fadvise
 * DONTNEED on each of `files` (dd iflag=nocache count=0). Returns the method used.
 */
export function dropCaches(files) {
  spawnSync("sync");
  try {
    fs.writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return "drop_caches";
  } catch {
    for (const f of files) {
      if (fs.existsSync(f)) spawnSync("dd", [`if=${f}`, "iflag=nocache", "count=0", "status=none"]);
    }
    return "fadvise";
  }
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** True when `cmd --version` (or `probe`) runs. */
export function have(cmd, probe = ["--version"]) {
  return spawnSync(cmd, probe, { stdio: "ignore" }).status === 0;
}
