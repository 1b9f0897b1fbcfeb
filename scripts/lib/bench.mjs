// ssync benchmark (issue 9, scope 7): what users feel, next to baselines measured in the same
// run. Run by scripts/bench with Node 26; no dependencies. `scripts/bench --help` for options.
//
// 1. Images (sparse, deterministic from --seed, in one temporary folder removed at the end and
//    on Ctrl-C): a VM-like image (4 GiB apparent, 2 GiB of data in ~780 extents: 40%
//    compressible, 40% random, 20% allocated zeros) and a 64 GiB image with 1 GiB of data; of
//    each an old version (the destination) and a new one with 1% of its 64 KiB data blocks
//    changed the ways a guest does. The bytes that really differ are counted page by page.
// 2. Cases: first copy (VM-like, destination absent), incremental (VM-like), sparse (64 GiB
//    incremental); the first copy also as a push at --bwlimit (row "bwlimit", default 20M). Each case's rows — ssync per runtime and the baselines — run in turn, N
//    rounds (A B C A B C …: drift on a shared machine falls on all alike); before every run the
//    destination is reset, the page cache dropped and the runtime's own code read back.
// 3. Printed: a table of medians and the acceptance ratios with their targets; the rate the
//    --bwlimit push achieved on the wire and its ratio to the limit (issue 10: within 10%); the
//    "cache" row (issue 12): the incremental push to a destination whose signature cache is
//    current (primed, untimed, by a push of the old image onto it), which must read nothing of
//    the destination, against one extent read of the source (target ≤ 1.2×).
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BLOCK, changeImage, copyImage, diffPages, GiB, layoutShares, MiB, vmLayout, writeImage, zstdBytes } from "./bench-images.mjs";
import { linkRate, makeLink, makeTrust, startListener } from "./bench-net.mjs";
import { dropCaches, GNU_TIME, have, killAll, median, run, runAll } from "./bench-proc.mjs";
import { fmtMiB, fmtS, medians, printTable, verdict } from "./bench-report.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const NODE = process.execPath;
const CASES = ["first", "incremental", "sparse", "files"];
const ROWS = ["local", "push", "pull", "link", "bwlimit", "cache", "fanout"];

const USAGE = `usage: scripts/bench [options]
  --runtimes LIST   comma-separated: deno (scripts/ssync, from source), binary (--binary),
                    or NAME=PATH (any ssync executable, e.g. old=/tmp/ssync-main to compare
                    with an earlier build). Default: deno,binary when the binary exists, else deno
  --binary PATH     the Node single binary (scripts/build-binary; default dist/ssync)
  --cases LIST      ${CASES.join(",")} (default all)
  --rows LIST       ssync rows: ${ROWS.join(",")} (default all); baselines always run
  --runs N          runs per row, median reported (default 3)
  --scale F         multiply every size (default 1: 4 GiB/2 GiB VM-like, 64 GiB/1 GiB sparse);
                    e.g. 0.125 for a quick check
  --rate RATE       the shaped link's rate, tc syntax (default 1gbit)
  --bwlimit RATE    the limit of the "bwlimit" row (a first-copy push over loopback),
                    ssync's syntax: K, M, G are 1024-based (default 20M: well below what
                    a 2-core machine pushes unlimited, ~50 MiB/s, so that the limit binds)
  --seed S          image seed (default 9)
  --dir DIR         where the images go (default the system temp dir)
  --no-rsync        skip the rsync baseline (slow: it reads both whole files)
  --keep            keep the temporary folder (debugging)`;

function parseArgs(argv) {
  const o = { runtimes: null, binary: path.join(root, "dist/ssync"), cases: CASES, rows: ROWS, runs: 3, scale: 1, rate: "1gbit", bwlimit: "20M", seed: "9", dir: os.tmpdir(), rsync: true, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) fail(`${flag} needs a value`);
      return v;
    };
    const list = (allowed) => {
      const xs = value().split(",").filter(Boolean);
      for (const x of xs) if (!allowed.includes(x)) fail(`unknown ${flag} entry ${x}: use ${allowed.join(",")}`);
      return xs;
    };
    if (flag === "--runtimes") o.runtimes = value().split(",").filter(Boolean);
    else if (flag === "--binary") o.binary = path.resolve(value());
    else if (flag === "--cases") o.cases = list(CASES);
    else if (flag === "--rows") o.rows = list(ROWS);
    else if (flag === "--runs") o.runs = Number(value());
    else if (flag === "--scale") o.scale = Number(value());
    else if (flag === "--rate") o.rate = value();
    else if (flag === "--bwlimit") o.bwlimit = value();
    else if (flag === "--seed") o.seed = value();
    else if (flag === "--dir") o.dir = path.resolve(value());
    else if (flag === "--no-rsync") o.rsync = false;
    else if (flag === "--keep") o.keep = true;
    else if (flag === "-h" || flag === "--help") {
      console.log(USAGE);
      process.exit(0);
    } else fail(`unknown argument ${argv[i]}\n${USAGE}`);
  }
  if (!(Number.isInteger(o.runs) && o.runs >= 1 && o.runs <= 50)) fail("--runs must be an integer from 1 to 50");
  if (!(o.scale > 0 && o.scale <= 4)) fail("--scale must be in (0, 4]");
  o.bwlimitBytes = bwlimitBytes(o.bwlimit);
  if (!(o.bwlimitBytes > 0)) fail(`--bwlimit ${o.bwlimit}: use a rate such as 50M (K, M, G: 1024-based)`);
  o.runtimes ??= fs.existsSync(o.binary) ? ["deno", "binary"] : ["deno"];
  o.runtimes = o.runtimes.map((spec) => {
    if (spec === "deno") return { name: "deno", cmd: [path.join(root, "scripts/ssync")] };
    if (spec === "binary") {
      if (!fs.existsSync(o.binary)) fail(`no binary at ${o.binary}: run scripts/build-binary or give --binary PATH`);
      return { name: "binary", cmd: [o.binary] };
    }
    const m = /^([\w.-]+)=(.+)$/.exec(spec);
    if (!m || !fs.existsSync(m[2])) fail(`--runtimes ${spec}: use deno, binary or NAME=PATH to an ssync executable`);
    return { name: m[1], cmd: [path.resolve(m[2])] };
  });
  return o;
}

/** --bwlimit's value in bytes per second, as ssync reads it (src/cli/bwlimit.ts); NaN if not one. */
function bwlimitBytes(text) {
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?(?:\/s)?$/i.exec(String(text).trim());
  return m ? Math.floor(Number(m[1]) * 1024 ** " kmg".indexOf(m[2].toLowerCase() || " ")) : NaN;
}

function fail(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const t0 = Date.now();
const progress = (what) => process.stderr.write(`bench [${((Date.now() - t0) / 1000).toFixed(0)} s] ${what}\n`);

// --- the sizes ---------------------------------------------------------------------------------
const round64k = (n) => Math.max(BLOCK, Math.round(n / BLOCK) * BLOCK);
const VM = { apparent: round64k(4 * GiB * opts.scale), data: round64k(2 * GiB * opts.scale), extents: Math.max(24, Math.round(780 * opts.scale)) };
const SPARSE = { apparent: round64k(64 * GiB * opts.scale), data: round64k(1 * GiB * opts.scale), extents: Math.max(16, Math.round(400 * opts.scale)) };
const SPARSE_CASE = `sparse ${fmtMiB(SPARSE.apparent)}, 1%`;
const wantVM = opts.cases.includes("first") || opts.cases.includes("incremental");
const wantSparse = opts.cases.includes("sparse");
const wantFiles = opts.cases.includes("files");
/** Issue 11's folder case: this many files of FILE_BYTES in FILE_FOLDERS subfolders. */
const FILES = 1000;
const FILE_BYTES = 4096;
const FILE_FOLDERS = 10;
const FILES_CASE = `folder of ${FILES} × ${FILE_BYTES / 1024} KiB`;
const wantLink = opts.rows.includes("link") && wantVM;

// --- the work folder, cleaned up whatever happens ---------------------------------------------
fs.mkdirSync(opts.dir, { recursive: true });
const need = (wantVM ? (opts.rows.includes("fanout") ? 9 : 6) * VM.data : 0) + (wantSparse ? 4 * SPARSE.data : 0) + GiB / 2;
const { bavail, bsize } = fs.statfsSync(opts.dir);
if (bavail * bsize < need) fail(`${opts.dir} has ${fmtMiB(bavail * bsize)} free; the bench needs about ${fmtMiB(need)} (use --dir or --scale)`);
const work = fs.mkdtempSync(path.join(opts.dir, "ssync-bench-"));
const f = (name) => path.join(work, name);
let link = null;
process.on("exit", () => {
  killAll();
  link?.destroy();
  if (!opts.keep) fs.rmSync(work, { recursive: true, force: true });
  else console.error(`bench: kept ${work}`);
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => process.exit(130));

// --- tools: ask apt for what is missing, else skip those baselines with the reason -------------
const skipped = [];
function ensureTool(cmd, pkg, probe) {
  if (have(cmd, probe)) return true;
  if (process.getuid?.() === 0 && have("apt-get", ["--version"])) {
    progress(`installing ${pkg} (apt-get install -y ${pkg})`);
    spawnSync("apt-get", ["install", "-y", "-q", pkg], { stdio: "ignore", timeout: 300_000 });
    if (have(cmd, probe)) return true;
  }
  return false;
}
const tools = {
  nbdcopy: ensureTool("nbdcopy", "libnbd-bin"),
  qemuImg: ensureTool("qemu-img", "qemu-utils"),
  rsync: opts.rsync && ensureTool("rsync", "rsync"),
};
if (!tools.nbdcopy) skipped.push("nbdcopy baselines: nbdcopy not installed (apt-get install libnbd-bin failed)");
if (!tools.qemuImg) skipped.push("qemu-img convert: not installed (apt-get install qemu-utils failed)");
if (!tools.rsync) skipped.push(opts.rsync ? "rsync: not installed" : "rsync: --no-rsync");
if (!have("fallocate", ["--version"])) fail("fallocate (util-linux) is needed to make the images");

// --- measuring ---------------------------------------------------------------------------------
let cacheMethod = "";
const imageFiles = () => fs.readdirSync(work).filter((n) => n.endsWith(".img")).map(f);

/** Page cache dropped, then the runtime's own code read back (start-up is timed warm). */
async function coldStart(row) {
  cacheMethod = dropCaches(imageFiles());
  for (const cmd of row.warm ?? []) await run(cmd[0], cmd.slice(1)).catch(() => {});
}

/** Runs every row of a case `opts.runs` times, in rounds; returns the rows with their results. */
async function measureCase(name, rows) {
  for (const row of rows) Object.assign(row, { case: name, results: [] });
  for (let i = 0; i < opts.runs; i++) {
    for (const row of rows) {
      progress(`${name}: ${row.label} (run ${i + 1}/${opts.runs})`);
      const ctx = (await row.prepare?.()) ?? {};
      await coldStart(row);
      try {
        const r = await row.run(ctx);
        if (row.check) row.check(r);
        row.results.push(r);
      } finally {
        await ctx.finish?.();
      }
    }
  }
  return rows;
}

const rmImage = (file) => {
  fs.rmSync(file, { force: true });
  const dir = path.dirname(file);
  for (const n of fs.readdirSync(dir)) {
    if (n.startsWith(`.${path.basename(file)}.ssync-`)) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  }
};

// The ssync rows: local sync, push and pull over loopback, push over the shaped link.
let trust = null;
async function ssyncJson(rt, args, { env, netns } = {}) {
  const [cmd, argv] = netns ? ["ip", ["netns", "exec", netns, ...rt.cmd, ...args]] : [rt.cmd[0], [...rt.cmd.slice(1), ...args]];
  const r = await run(cmd, argv, { env, tmp: work });
  const summary = JSON.parse(r.stdout.trim().split("\n").at(-1));
  if (summary.ok !== true) throw new Error(`ssync ${args[0]} did not report ok: ${r.stdout}`);
  return { seconds: r.seconds, rssKiB: r.rssKiB, summary };
}

/**
 * ssync rows of one case for runtime `rt`: `src` (a file in the work folder, which the listener
 * serves), `dst` the destination's name there; `reset` prepares the destination before a run.
 */
function ssyncRows(rt, { src, dst, reset, link: onLink, changed, inplace = false, bwlimit = false, primeCache = null, fanOut = false }) {
  const rows = [];
  // After each run: the changed blocks of the destination now hold the source's bytes (a cheap
  // check besides ssync's own root-hash comparison).
  const check = (file) => (r) => {
    if (r.summary.size !== fs.statSync(f(src)).size) throw new Error(`ssync reported size ${r.summary.size}`);
    if (!changed) return;
    const d = diffPages(f(src), file, changed, r.summary.size);
    if (d.pages !== 0) throw new Error(`after ssync, ${d.pages} pages of ${file} still differ from ${src}`);
  };
  const warm = [[...rt.cmd, "--version"]];
  const withListener = (netns, host) => async () => {
    await reset(f(dst));
    const l = await startListener(rt.cmd, trust, { root: work, host, netns });
    return { listener: l, finish: async () => (l.stopped ??= await l.stop()) };
  };
  const remote = async (ctx, args, o) => {
    const r = await ssyncJson(rt, args(ctx.listener.remote), o);
    r.listenerKiB = await ctx.finish();
    return r;
  };
  if (opts.rows.includes("local")) {
    rows.push({ kind: "ssync", mode: "local", runtime: rt.name, label: `ssync sync (${rt.name})`, warm, check: check(f(dst)), prepare: () => reset(f(dst)), run: () => ssyncJson(rt, ["sync", "--json", f(src), f(dst)]) });
  }
  if (opts.rows.includes("local") && changed && inplace) {
    // The crash-safe journal's cost: the same sync writing in place (README: target ≤ 1.10×).
    rows.push({ kind: "ssync", mode: "local", inplace: true, runtime: rt.name, label: `ssync sync --inplace (${rt.name})`, warm, check: check(f(dst)), prepare: () => reset(f(dst)), run: () => ssyncJson(rt, ["sync", "--json", "--inplace", f(src), f(dst)]) });
  }
  if (opts.rows.includes("push")) {
    rows.push({ kind: "ssync", mode: "push", runtime: rt.name, label: `ssync push, loopback (${rt.name})`, warm, check: check(f(dst)), prepare: withListener(null, "127.0.0.1"), run: (ctx) => remote(ctx, (to) => ["push", "--json", "--accept-new", f(src), `${to}:${dst}`], { env: trust.clientEnv }) });
  }
  if (opts.rows.includes("pull")) {
    const local = `pull-${dst}`;
    rows.push({
      kind: "ssync",
      mode: "pull",
      runtime: rt.name,
      label: `ssync pull, loopback (${rt.name})`,
      warm,
      check: check(f(local)),
      prepare: async () => {
        await reset(f(local));
        const l = await startListener(rt.cmd, trust, { root: work, host: "127.0.0.1" });
        return { listener: l, finish: async () => (l.stopped ??= await l.stop()) };
      },
      run: (ctx) => remote(ctx, (to) => ["pull", "--json", "--accept-new", `${to}:${src}`, f(local)], { env: trust.clientEnv }),
    });
  }
  if (bwlimit && opts.rows.includes("bwlimit")) {
    rows.push({ kind: "ssync", mode: "push", bwlimit: true, runtime: rt.name, label: `ssync push --bwlimit ${opts.bwlimit}, loopback (${rt.name})`, warm, check: check(f(dst)), prepare: withListener(null, "127.0.0.1"), run: (ctx) => remote(ctx, (to) => ["push", "--json", "--accept-new", "--bwlimit", opts.bwlimit, f(src), `${to}:${dst}`], { env: trust.clientEnv }) });
  }
  if (primeCache && opts.rows.includes("cache")) {
    // The second push of the night: the destination did not change since the first, whose
    // commit left its signature cache (here: a push of the old image onto it, before the cold start).
    const checkAll = check(f(dst));
    rows.push({
      kind: "ssync",
      mode: "push",
      cache: true,
      runtime: rt.name,
      label: `ssync push, destination signature cache (${rt.name})`,
      warm,
      check: (r) => {
        checkAll(r);
        if (r.summary.destinationCacheUsed !== true || r.summary.destinationBytesRead !== 0) {
          throw new Error(`the cache row's push read ${r.summary.destinationBytesRead} bytes of the destination (cache used: ${r.summary.destinationCacheUsed})`);
        }
      },
      prepare: async () => {
        const ctx = await withListener(null, "127.0.0.1")();
        const primed = await ssyncJson(rt, ["push", "--json", "--accept-new", f(primeCache), `${ctx.listener.remote}:${dst}`], { env: trust.clientEnv });
        if (primed.summary.blocksSent !== 0 || primed.summary.zeroBytesSent !== 0) throw new Error("priming the cache row: the destination was not the old image");
        return ctx;
      },
      run: (ctx) => remote(ctx, (to) => ["push", "--json", "--accept-new", f(src), `${to}:${dst}`], { env: trust.clientEnv }),
    });
  }
  if (fanOut && changed && opts.rows.includes("fanout")) rows.push(...fanOutRows(rt, { src, dst, reset, check, warm }));
  if (onLink && link) {
    rows.push({ kind: "ssync", mode: "push", link: true, runtime: rt.name, label: `ssync push, ${opts.rate} link (${rt.name})`, warm, check: check(f(dst)), prepare: withListener(link.a, link.hostA), run: (ctx) => remote(ctx, (to) => ["push", "--json", "--accept-new", f(src), `${to}:${dst}`], { env: trust.clientEnv, netns: link.b }) });
  }
  return rows;
}

/**
 * Issue 12's fan-out rows: `ssync push SRC A B C` to three listeners (three copies of the old
 * destination) against the same three pushes run one after another. Each destination is checked
 * by `check`; a row's summary adds up its destinations' (the table's DATA, wire and signature
 * columns are the three together) and the client's RSS is the largest of its processes.
 */
function fanOutRows(rt, { src, dst, reset, check, warm }) {
  const names = [1, 2, 3].map((i) => `fan${i}-${dst}`);
  const prepare = async () => {
    const listeners = [];
    const finish = async () => Math.max(...(await Promise.all(listeners.map(async (l) => (l.stopped ??= await l.stop())))));
    try {
      for (const n of names) {
        await reset(f(n));
        listeners.push(await startListener(rt.cmd, trust, { root: work, host: "127.0.0.1" }));
      }
    } catch (e) {
      await finish();
      throw e;
    }
    return { listeners, finish };
  };
  const sum = (summaries) => {
    const total = (k) => summaries.reduce((a, x) => a + (x[k] ?? NaN), 0);
    const keys = ["dataBytesSent", "dataBytesOnWire", "wireBytesSent", "wireBytesReceived", "bytesCompared", "signatureBytes"];
    return { ...Object.fromEntries(keys.map((k) => [k, total(k)])), size: summaries[0].size, seconds: total("seconds") };
  };
  const checkAll = (r) => names.forEach((n, i) => check(f(n))({ summary: r.each[i] }));
  const done = async (ctx, r) => ({ ...r, listenerKiB: await ctx.finish() });
  return [
    {
      kind: "ssync",
      mode: "push",
      fanOut: "one",
      runtime: rt.name,
      label: `ssync push SRC A B C, 3 listeners over loopback (${rt.name})`,
      warm,
      check: (r) => {
        const read = r.fan.sourceBytesRead;
        if (!(read <= r.each[0].bytesCompared + MiB)) throw new Error(`the fan-out read ${read} bytes of the source, more than once (${r.each[0].bytesCompared} compared per destination)`);
        checkAll(r);
      },
      prepare,
      run: async (ctx) => {
        const to = ctx.listeners.map((l, i) => `${l.remote}:${names[i]}`);
        const r = await ssyncJson(rt, ["push", "--json", "--accept-new", f(src), ...to], { env: trust.clientEnv });
        return done(ctx, { seconds: r.seconds, rssKiB: r.rssKiB, fan: r.summary, each: r.summary.destinations, summary: sum(r.summary.destinations) });
      },
    },
    {
      kind: "ssync",
      mode: "push",
      fanOut: "sequential",
      runtime: rt.name,
      label: `3 × ssync push, one after another, loopback (${rt.name})`,
      warm,
      check: checkAll,
      prepare,
      run: async (ctx) => {
        const each = [];
        let seconds = 0;
        let rssKiB = 0;
        for (const [i, l] of ctx.listeners.entries()) {
          const r = await ssyncJson(rt, ["push", "--json", "--accept-new", f(src), `${l.remote}:${names[i]}`], { env: trust.clientEnv });
          seconds += r.seconds;
          rssKiB = Math.max(rssKiB, r.rssKiB);
          each.push(r.summary);
        }
        return done(ctx, { seconds, rssKiB, each, summary: sum(each) });
      },
    },
  ];
}

const nbd = (...args) => ["nbdcopy", args];
const baseline = (label, id, cmds, extra = {}) => ({ kind: "baseline", id, label, warm: [], run: () => (cmds.length === 1 ? run(cmds[0][0], cmds[0][1]) : runAll(cmds)), ...extra });
const shCmd = (script) => ["sh", ["-c", script]];
const q = (p) => `'${p.replaceAll("'", "'\\''")}'`;

// --- main --------------------------------------------------------------------------------------
const header = [];
header.push(`ssync bench: ${process.argv.slice(2).join(" ") || "(defaults)"}`);
header.push(`  ${os.availableParallelism()} cores, ${fmtMiB(os.totalmem())} RAM, Linux ${os.release()}; ${opts.runs} runs per row, median; runtimes ${opts.runtimes.map((r) => `${r.name}=${r.cmd.join(" ")}`).join(", ")}`);
const commit = spawnSync("git", ["-C", root, "log", "-1", "--format=%h %s"], { encoding: "utf8" }).stdout?.trim();
const load = () => os.loadavg().map((x) => x.toFixed(1)).join(" ");
header.push(`  load average at the start: ${load()} (a busy machine makes every row slower; the ratios are what to read)`);
// A guest whose freed memory goes back to its host (virtio-balloon free page reporting) pays a
// host page fault for each page it touches again: every cold read's page-cache fill, after the
// drop before each run. Measured on such a guest: up to ~2.8 s of sys time per GiB touched anew,
// varying from run to run with how much the host took back; so it is printed, not guessed.
const REPORTED = "/sys/module/page_reporting/parameters/reported_kib";
const reportedKiB = () => {
  try {
    return Number(fs.readFileSync(REPORTED, "utf8"));
  } catch {
    return NaN;
  }
};
const reportedAtStart = reportedKiB();
if (commit) header.push(`  source: ${commit.length > 90 ? `${commit.slice(0, 90)}…` : commit}`);

trust = await makeTrust(opts.runtimes[0].cmd, path.join(work, "trust"));
fs.mkdirSync(path.join(work, "trust", "scratch"), { recursive: true });

// Warm-up, untimed: each runtime's caches (Deno's module cache, the binary's pages).
{
  const tiny = vmLayout({ apparent: 8 * MiB, data: 2 * MiB, extents: 4, seed: "warm" });
  writeImage(f("warm.img"), tiny, "warm");
  for (const rt of opts.runtimes) {
    progress(`warm-up: ${rt.name}`);
    await ssyncJson(rt, ["sync", "--json", f("warm.img"), f("warm-copy.img")]);
    rmImage(f("warm-copy.img"));
  }
  rmImage(f("warm.img"));
}

const allRows = [];
const facts = {};

if (wantLink) {
  try {
    link = makeLink(`ssb${process.pid % 100000}`, opts.rate);
    const bytes = Math.max(64 * MiB, Math.min(512 * MiB, Math.round(256 * MiB * opts.scale * 4) & ~0xfffff));
    progress(`measuring the ${opts.rate} link: ${fmtMiB(bytes)} over plain TCP, ${opts.runs}×`);
    facts.linkRate = await linkRate(link, NODE, bytes, opts.runs);
    facts.linkProbe = bytes;
  } catch (e) {
    link?.destroy();
    link = null;
    skipped.push(`link rows: ${e.message}`);
  }
}

if (wantVM) {
  progress(`making the VM-like image: ${fmtMiB(VM.apparent)} apparent, ${fmtMiB(VM.data)} data in ${VM.extents} extents`);
  const layout = vmLayout({ ...VM, seed: opts.seed });
  writeImage(f("vm-old.img"), layout, opts.seed);
  copyImage(f("vm-old.img"), f("vm-new.img"), layout);
  const ch = changeImage(f("vm-new.img"), layout, { fraction: 0.01, seed: opts.seed });
  progress("comparing the two VM-like images page by page");
  const diff = diffPages(f("vm-old.img"), f("vm-new.img"), [...layout.segments, ...ch.extra], VM.apparent);
  facts.vm = { layout, ch, diff, shares: layoutShares(layout) };
  if (wantLink && link) {
    progress("zstd-1 of every 64 KiB block of the VM-like image (node:zlib)");
    facts.vm.zstd = zstdBytes(f("vm-new.img"), layout);
  }
  const resetOld = async (file) => copyImage(f("vm-old.img"), file, layout);
  const absent = async (file) => rmImage(file);
  const out = f("vm-out.img");

  if (opts.cases.includes("first")) {
    const rows = [];
    if (tools.nbdcopy) {
      rows.push(baseline("nbdcopy SRC null: (source extent read)", "srcRead", [nbd(f("vm-new.img"), "null:")]));
      rows.push(baseline("nbdcopy --flush SRC DST", "nbdcopy", [nbd("--flush", f("vm-new.img"), out)], { prepare: () => rmImage(out) }));
    }
    rows.push(baseline("cp --sparse=always SRC DST; sync DST", "cp", [shCmd(`cp --sparse=always ${q(f("vm-new.img"))} ${q(out)} && sync ${q(out)}`)], { prepare: () => rmImage(out) }));
    if (tools.qemuImg) {
      rows.push(baseline("qemu-img convert -S 64k -O raw SRC DST; sync DST", "qemu", [shCmd(`qemu-img convert -S 64k -O raw ${q(f("vm-new.img"))} ${q(out)} && sync ${q(out)}`)], { prepare: () => rmImage(out) }));
    }
    for (const rt of opts.runtimes) rows.push(...ssyncRows(rt, { src: "vm-new.img", dst: "vm-dst.img", reset: absent, link: true, bwlimit: true }));
    allRows.push(...(await measureCase("first copy", rows)));
    rmImage(out);
    rmImage(f("vm-dst.img"));
    rmImage(f("pull-vm-dst.img"));
  }

  if (opts.cases.includes("incremental")) {
    const rows = [];
    if (tools.nbdcopy) {
      rows.push(baseline("nbdcopy SRC null: (source extent read)", "srcRead", [nbd(f("vm-new.img"), "null:")]));
      rows.push(baseline("nbdcopy SRC null: & nbdcopy DST null: (both sides)", "bothRead", [nbd(f("vm-new.img"), "null:"), nbd(f("vm-dst.img"), "null:")], { prepare: () => resetOld(f("vm-dst.img")) }));
    }
    if (tools.rsync) {
      rows.push(baseline("rsync --inplace --no-whole-file -I SRC DST", "rsync", [["rsync", ["--inplace", "--no-whole-file", "-I", f("vm-new.img"), f("vm-dst.img")]]], { prepare: () => resetOld(f("vm-dst.img")) }));
    }
    for (const rt of opts.runtimes) rows.push(...ssyncRows(rt, { src: "vm-new.img", dst: "vm-dst.img", reset: resetOld, link: true, changed: facts.vm.ch.extra, inplace: true, primeCache: "vm-old.img", fanOut: true }));
    allRows.push(...(await measureCase("incremental 1%", rows)));
    for (const n of ["vm-dst.img", "pull-vm-dst.img", "fan1-vm-dst.img", "fan2-vm-dst.img", "fan3-vm-dst.img"]) rmImage(f(n));
  }
}

if (wantSparse) {
  progress(`making the sparse image: ${fmtMiB(SPARSE.apparent)} apparent, ${fmtMiB(SPARSE.data)} data in ${SPARSE.extents} extents`);
  const layout = vmLayout({ ...SPARSE, seed: `${opts.seed}:sparse` });
  writeImage(f("sp-old.img"), layout, `${opts.seed}:sparse`);
  copyImage(f("sp-old.img"), f("sp-new.img"), layout);
  const ch = changeImage(f("sp-new.img"), layout, { fraction: 0.01, seed: `${opts.seed}:sparse` });
  facts.sparse = { layout, ch };
  const resetOld = async (file) => copyImage(f("sp-old.img"), file, layout);
  const rows = [];
  if (tools.nbdcopy) {
    rows.push(baseline("nbdcopy SRC null: (source extent read)", "srcRead", [nbd(f("sp-new.img"), "null:")]));
    rows.push(baseline("nbdcopy SRC null: & nbdcopy DST null: (both sides)", "bothRead", [nbd(f("sp-new.img"), "null:"), nbd(f("sp-dst.img"), "null:")], { prepare: () => resetOld(f("sp-dst.img")) }));
  }
  for (const rt of opts.runtimes) rows.push(...ssyncRows(rt, { src: "sp-new.img", dst: "sp-dst.img", reset: resetOld, link: false, changed: ch.extra, primeCache: "sp-old.img" }));
  allRows.push(...(await measureCase(SPARSE_CASE, rows)));
}

if (wantFiles) {
  progress(`making the folder: ${FILES} files of ${FILE_BYTES} bytes in ${FILE_FOLDERS} subfolders`);
  const tree = f("files-src");
  for (let i = 0; i < FILES; i++) {
    const dir = path.join(tree, `d${i % FILE_FOLDERS}`);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `f${i}.bin`), crypto.randomBytes(FILE_BYTES));
  }
  const out = f("files-dst");
  const rows = [baseline("cp -r SRC DST; sync (local)", "cpTree", [shCmd(`cp -r ${q(tree)} ${q(out)} && sync`)], { prepare: () => fs.rmSync(out, { recursive: true, force: true }) })];
  for (const rt of opts.runtimes) {
    const warm = [[...rt.cmd, "--version"]];
    const listen = (fresh) => async () => {
      if (fresh) fs.rmSync(out, { recursive: true, force: true });
      const l = await startListener(rt.cmd, trust, { root: work, host: "127.0.0.1" });
      return { listener: l, finish: async () => (l.stopped ??= await l.stop()) };
    };
    const push = async (ctx) => {
      const r = await ssyncJson(rt, ["push", "--json", "--accept-new", `${tree}/`, `${ctx.listener.remote}:files-dst/`], { env: trust.clientEnv });
      r.listenerKiB = await ctx.finish();
      if (r.summary.counts.files !== FILES) throw new Error(`ssync push DIR/ saw ${r.summary.counts.files} files`);
      return r;
    };
    rows.push({ kind: "ssync", mode: "push", folder: "first", runtime: rt.name, label: `ssync push DIR/, first copy, loopback (${rt.name})`, warm, prepare: listen(true), run: push });
    rows.push({ kind: "ssync", mode: "push", folder: "again", runtime: rt.name, label: `ssync push DIR/, unchanged (quick check), loopback (${rt.name})`, warm, prepare: listen(false), run: push });
  }
  allRows.push(...(await measureCase(FILES_CASE, rows)));
  fs.rmSync(tree, { recursive: true, force: true });
  fs.rmSync(out, { recursive: true, force: true });
}

// --- the report --------------------------------------------------------------------------------
const find = (kase, pred) => allRows.find((r) => r.case === kase && pred(r));
const base = (kase, id) => find(kase, (r) => r.id === id);
const sec = (row) => (row ? medians(row).seconds : NaN);
const refOf = (row) => {
  const pick = (id, name) => {
    const b = base(row.case, id);
    return b && b !== row ? { seconds: sec(b), name } : null;
  };
  if (row.kind !== "ssync") return row.id === "srcRead" ? null : pick("srcRead", "src read");
  if (row.case === "first copy") return pick("nbdcopy", "nbdcopy");
  if (row.case === FILES_CASE) return pick("cpTree", "cp -r");
  return pick(row.case.startsWith("sparse") ? "srcRead" : "bothRead", row.case.startsWith("sparse") ? "src read" : "both reads");
};

console.log();
for (const l of header) console.log(l);
console.log(`  load average at the end: ${load()}`);
if (Number.isFinite(reportedAtStart)) {
  const gib = (reportedKiB() - reportedAtStart) / 2 ** 20;
  console.log(`  free page reporting: the host took back ${gib.toFixed(1)} GiB of freed guest memory during the run (${REPORTED}); pages touched again fault on the host, so cold reads cost sys time that varies from run to run`);
}
console.log(`  page cache: ${cacheMethod === "drop_caches" ? "echo 3 > /proc/sys/vm/drop_caches" : "posix_fadvise DONTNEED on the images (not root)"} before every run; the runtime's code then read back (--version)`);
console.log(`  peak RSS: ${GNU_TIME ? "GNU time %M" : "VmHWM polled"} for clients and baselines; the listener's VmHWM just before it stops (a fresh listener per run)`);
if (facts.vm) {
  const { layout, ch, diff, shares } = facts.vm;
  const part = (k) => `${k} ${fmtMiB(shares[k] ?? 0)}`;
  console.log(`  VM-like image: ${fmtMiB(layout.size)} apparent, ${layout.segments.length} extents: ${["text", "bin", "random", "zero", "alloc"].map(part).join(", ")} (text+bin compressible; zero written, alloc fallocate'd)`);
  console.log(`    changed ${ch.changes.length} of ${ch.dataBlocks} 64 KiB data blocks: ${Object.entries(ch.byKind).map(([k, n]) => `${k} ${n}`).join(", ")}`);
  console.log(`    really differing at 4 KiB (page-by-page comparison): ${diff.pages} pages = ${fmtMiB(diff.bytes)}, of which non-zero in the new image ${fmtMiB(diff.nonZeroBytes)} (DATA's due; the rest are ZERO ranges)`);
  if (facts.vm.zstd) console.log(`    zstd-1 per 64 KiB block: ${fmtMiB(facts.vm.zstd.raw)} of non-zero blocks → ${fmtMiB(facts.vm.zstd.packed)}`);
}
if (facts.sparse) console.log(`  sparse image: ${fmtMiB(facts.sparse.layout.size)} apparent, ${fmtMiB(SPARSE.data)} data in ${facts.sparse.layout.segments.length} extents; ${facts.sparse.ch.changes.length} blocks changed`);
if (facts.linkRate) console.log(`  link: two network namespaces, veth, htb ${opts.rate} each way; plain TCP moves ${(facts.linkRate / 1e6).toFixed(1)} MB/s (median of ${opts.runs} × ${fmtMiB(facts.linkProbe)})`);
for (const s of skipped) console.log(`  skipped: ${s}`);
console.log(`  Times are wall seconds from spawn to exit (process start-up included); copies fsync their output.`);
console.log(`  ratio: the row's median ÷ its case's reference; RSS MiB c/l: client/listener; DATA: DATA bytes before compression;`);
console.log(`  on wire: every record both ways; sig/compared: digest records ÷ bytes compared (≤: bound from wire bytes).`);
console.log();
printTable(allRows, { refs: refOf });

// Acceptance (issue 9), per runtime.
console.log();
console.log("Acceptance (issue 9), medians of this run:");
let failed = 0;
for (const rt of opts.runtimes) {
  const ss = (kase, pred) => find(kase, (r) => r.kind === "ssync" && r.runtime === rt.name && pred(r));
  const lines = [];
  const ratio = (a, b) => sec(a) / sec(b);
  const incrPush = ss("incremental 1%", (r) => r.mode === "push" && !r.link && !r.bwlimit && !r.cache && !r.fanOut);
  lines.push(verdict("incremental push ÷ both sides' extent reads", ratio(incrPush, base("incremental 1%", "bothRead")), 1.5, `${fmtS(sec(incrPush))} s vs ${fmtS(sec(base("incremental 1%", "bothRead")))} s`));
  const spPush = ss(SPARSE_CASE, (r) => r.mode === "push" && !r.bwlimit && !r.cache && !r.fanOut);
  lines.push(verdict(`${fmtMiB(SPARSE.apparent)} sparse push ÷ source extent read`, ratio(spPush, base(SPARSE_CASE, "srcRead")), 1.5, `${fmtS(sec(spPush))} s vs ${fmtS(sec(base(SPARSE_CASE, "srcRead")))} s`));
  const firstPush = ss("first copy", (r) => r.mode === "push" && !r.link && !r.bwlimit && !r.cache && !r.fanOut);
  lines.push(verdict("first copy push ÷ nbdcopy SRC DST", ratio(firstPush, base("first copy", "nbdcopy")), 1.3, `${fmtS(sec(firstPush))} s vs ${fmtS(sec(base("first copy", "nbdcopy")))} s`));
  for (const kase of ["first copy", "incremental 1%", SPARSE_CASE]) {
    const local = ss(kase, (r) => r.mode === "local" && !r.inplace);
    const push = ss(kase, (r) => r.mode === "push" && !r.link && !r.bwlimit && !r.cache && !r.fanOut);
    if (local || push) lines.push(verdict(`${kase}: local sync ÷ push`, ratio(local, push), 1.0, `${fmtS(sec(local))} s vs ${fmtS(sec(push))} s`));
  }
  const linkFirst = ss("first copy", (r) => r.link);
  const lineTime = facts.vm?.zstd && facts.linkRate ? facts.vm.zstd.packed / facts.linkRate : NaN;
  lines.push(verdict("link first copy ÷ (zstd-1 bytes ÷ link rate)", sec(linkFirst) / lineTime, 1.15, `${fmtS(sec(linkFirst))} s vs ${fmtS(lineTime)} s`));
  const linkIncr = ss("incremental 1%", (r) => r.link);
  lines.push(verdict("link incremental ÷ loopback incremental push", ratio(linkIncr, incrPush), 1.2, `${fmtS(sec(linkIncr))} s vs ${fmtS(sec(incrPush))} s`));
  const mine = allRows.filter((r) => r.kind === "ssync" && r.runtime === rt.name);
  const maxOf = (rows, k) => Math.max(-Infinity, ...rows.flatMap((r) => r.results.map((x) => x[k] ?? NaN)).filter(Number.isFinite));
  const remote = mine.filter((r) => r.mode !== "local");
  const locals = mine.filter((r) => r.mode === "local");
  lines.push(verdict("peak RSS, client (push/pull), every run", maxOf(remote, "rssKiB") / 1024, 200, "largest of all runs", "MiB"));
  lines.push(verdict("peak RSS, listener, every run", maxOf(remote, "listenerKiB") / 1024, 200, "largest of all runs", "MiB"));
  lines.push(verdict("peak RSS, local ssync sync (both sides in one process)", maxOf(locals, "rssKiB") / 1024, 200, "largest of all runs", "MiB"));
  let sig = { share: NaN, row: null, exact: true };
  for (const r of mine) {
    const m = medians(r);
    const share = (100 * m.signature) / m.compared;
    if (!(share <= sig.share)) sig = { share, row: r, exact: m.signatureExact };
  }
  lines.push(verdict("signature traffic ÷ bytes compared (largest row)", sig.share, 0.05, sig.row ? `${sig.row.case}, ${sig.row.label}${sig.exact ? "" : "; an upper bound from wire bytes"}` : "no ssync rows", "%"));
  const data = medians(incrPush ?? { results: [] }).dataBytes;
  const due = facts.vm?.diff.nonZeroBytes;
  lines.push(verdict("DATA bytes (VM-like incremental push) ÷ really differing non-zero bytes at 4 KiB", data / due, 1.05, `${fmtMiB(data)} vs ${fmtMiB(due)}; all differing pages ${fmtMiB(facts.vm?.diff.bytes)}`));
  const journaled = ss("incremental 1%", (r) => r.mode === "local" && !r.inplace);
  const inPlace = ss("incremental 1%", (r) => r.inplace);
  if (inPlace) lines.push(verdict("(not issue 9) the journal's cost: incremental sync ÷ sync --inplace", ratio(journaled, inPlace), 1.1, `${fmtS(sec(journaled))} s vs ${fmtS(sec(inPlace))} s`));
  const folderFirst = ss(FILES_CASE, (r) => r.folder === "first");
  if (folderFirst) {
    const again = ss(FILES_CASE, (r) => r.folder === "again");
    lines.push(verdict(`(issue 11) ${FILES} files of ${FILE_BYTES / 1024} KiB, ssync push DIR/ over loopback, first copy`, sec(folderFirst), 3, `one connection; unchanged rerun ${fmtS(sec(again))} s; cp -r locally ${fmtS(sec(base(FILES_CASE, "cpTree")))} s`, " s"));
  }
  for (const kase of ["incremental 1%", SPARSE_CASE]) {
    const cached = ss(kase, (r) => r.cache);
    if (!cached) continue;
    const src = base(kase, "srcRead");
    lines.push(verdict(`(issue 12) ${kase}: push to a destination with a current signature cache ÷ source extent read`, ratio(cached, src), 1.2, `${fmtS(sec(cached))} s vs ${fmtS(sec(src))} s; destination read 0 B`));
  }
  const fanOne = ss("incremental 1%", (r) => r.fanOut === "one");
  if (fanOne) {
    const seq = ss("incremental 1%", (r) => r.fanOut === "sequential");
    const read = median(fanOne.results.map((r) => r.fan.sourceBytesRead));
    lines.push(verdict("(issue 12) incremental 1%: fan-out to 3 listeners ÷ 3 sequential pushes", ratio(fanOne, seq), 1.0, `${fmtS(sec(fanOne))} s vs ${fmtS(sec(seq))} s; source read once: ${fmtMiB(read)}; one push ${fmtS(sec(incrPush))} s`));
  }
  const limited = ss("first copy", (r) => r.bwlimit);
  if (limited) {
    // The rate on the wire: bytes the client sent ÷ ssync's own seconds (start-up excluded).
    const m = medians(limited);
    const rate = median(limited.results.map((r) => r.summary.wireBytesSent / r.summary.seconds));
    const off = Math.abs(rate / opts.bwlimitBytes - 1);
    lines.push(verdict(
      `(issue 10) first copy push at --bwlimit ${opts.bwlimit}: |achieved ÷ limit − 1|`,
      off,
      0.1,
      `${(rate / MiB).toFixed(1)} MiB/s = ${(rate / 1e6).toFixed(1)} MB/s on the wire, ${(rate / opts.bwlimitBytes).toFixed(3)}× the limit of ` +
        `${(opts.bwlimitBytes / MiB).toFixed(1)} MiB/s; DATA ${fmtMiB(m.dataBytes)}, ${fmtMiB(m.dataOnWire)} of it on the wire (zstd under the limit)`,
      "",
    ));
  }
  console.log(` ${rt.name}:`);
  for (const l of lines) {
    console.log(l.line);
    if (l.pass === false) failed++;
  }
}
console.log();
console.log(`bench: ${failed === 0 ? "every measured target met" : `${failed} target(s) not met`}; took ${((Date.now() - t0) / 1000).toFixed(0)} s.`);
progress("done");
