// ssync benchmark: medians of several runs, each case next to baselines measured in the same
// run (the machine is shared and noisy). Run by scripts/bench with Node 26; no dependencies.
//
// 1. Make a sparse source: APPARENT GiB with DATA MiB of random data in 64 extents, and a dense
//    file holding the same amount of data (the "one read of the allocated data" reference).
// 2. (a) first copy: ssync sync vs cp --sparse=always, cat of the source, cat of the data.
// 3. (b) incremental, 1% of the data blocks changed: ssync sync (crash-safe: redo journal)
//    vs ssync sync --inplace (no journal; runs alternate), vs rsync --inplace --no-whole-file,
//    and vs the first copy. The journal's cost is the time ratio journal ÷ --inplace.
// 4. (c) identical rerun: ssync sync vs the first copy and one read of the data.
// 5. (d) peak RSS of ssync on a small and on the large image: memory independent of size.
// Everything lives in one temporary directory, removed at the end (also on Ctrl-C).
import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const BLOCK = 64 * KiB;
const EXTENTS = 64;

const USAGE = `usage: scripts/bench [options]
  --apparent GIB    apparent size of the image (default 8; env SSYNC_BENCH_APPARENT_GIB)
  --data MIB        random data in it, in ${EXTENTS} extents (default 512; env SSYNC_BENCH_DATA_MIB)
  --runs N          runs per case, median reported (default 3; env SSYNC_BENCH_RUNS)
  --binary PATH     bench this ssync binary instead of scripts/ssync (Deno, from source)
  --dir DIR         where to put the images (default: the system temp dir)
  --no-rsync        skip the rsync baseline`;

function parseArgs(argv) {
  const env = process.env;
  const o = {
    apparentGiB: Number(env.SSYNC_BENCH_APPARENT_GIB ?? 8),
    dataMiB: Number(env.SSYNC_BENCH_DATA_MIB ?? 512),
    runs: Number(env.SSYNC_BENCH_RUNS ?? 3),
    binary: "",
    dir: os.tmpdir(),
    rsync: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s, 2);
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case "--apparent":
        o.apparentGiB = Number(value());
        break;
      case "--data":
        o.dataMiB = Number(value());
        break;
      case "--runs":
        o.runs = Number(value());
        break;
      case "--binary":
        o.binary = path.resolve(value());
        break;
      case "--dir":
        o.dir = path.resolve(value());
        break;
      case "--no-rsync":
        o.rsync = false;
        break;
      case "-h":
      case "--help":
        console.log(USAGE);
        process.exit(0);
        break;
      default:
        console.error(`bench: unknown argument ${argv[i]}\n${USAGE}`);
        process.exit(2);
    }
  }
  const dataBytes = o.dataMiB * MiB;
  const apparent = o.apparentGiB * GiB;
  if (!(o.runs >= 1 && Number.isInteger(o.runs))) fail("--runs must be a positive integer");
  if (!(dataBytes >= EXTENTS * BLOCK && dataBytes % (EXTENTS * BLOCK) === 0)) {
    fail(`--data must be a multiple of ${(EXTENTS * BLOCK) / MiB} MiB`);
  }
  if (!(apparent >= 2 * dataBytes)) fail("--apparent must be at least twice --data");
  if (o.binary && !fs.existsSync(o.binary)) {
    fail(`no binary at ${o.binary}: run scripts/build-binary`);
  }
  return o;
}

function fail(msg) {
  console.error(`bench: ${msg}`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const ssyncCmd = opts.binary ? [opts.binary] : [path.join(root, "scripts/ssync")];
const ssyncLabel = opts.binary
  ? `ssync (binary ${path.basename(opts.binary)})`
  : "ssync (scripts/ssync, Deno)";
const gnuTime = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : "";
const hasRsync = opts.rsync && spawnSync("rsync", ["--version"]).status === 0;

const work = fs.mkdtempSync(path.join(opts.dir, "ssync-bench-"));
const cleanup = () => fs.rmSync(work, { recursive: true, force: true });
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));
const f = (name) => path.join(work, name);

/**
 * Runs a command to completion: wall seconds and peak RSS (KiB) of the process. RSS comes
 * from GNU time when installed, else from polling /proc/PID/status VmHWM.
 */
async function run(cmd, args, { stdout = "ignore" } = {}) {
  const rssFile = f("rss.txt");
  const [file, argv] = gnuTime ? [gnuTime, ["-f", "%M", "-o", rssFile, cmd, ...args]] : [cmd, args];
  const started = process.hrtime.bigint();
  const child = spawn(file, argv, {
    stdio: ["ignore", stdout === "file" ? "pipe" : stdout, "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  let hwm = 0;
  const poll = gnuTime ? null : setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/status`, "utf8"));
      if (m) hwm = Math.max(hwm, Number(m[1]));
    } catch { /* exited */ }
  }, 10);
  const code = await new Promise((resolve) => child.on("close", resolve));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (poll) clearInterval(poll);
  if (code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${code}: ${err.trim()}`);
  if (gnuTime) hwm = Number(fs.readFileSync(rssFile, "utf8").trim().split("\n").pop());
  return { seconds, rssKiB: hwm, stdout: out };
}

const sh = (script) => run("sh", ["-c", script]);

async function ssync(src, dst, flags = []) {
  const r = await run(ssyncCmd[0], [...ssyncCmd.slice(1), "sync", "--json", ...flags, src, dst], {
    stdout: "file",
  });
  const s = JSON.parse(r.stdout);
  if (!s.ok) throw new Error(`ssync sync did not report ok: ${r.stdout}`);
  return { ...r, summary: s };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Drops the page cache (root only): every timed run then reads from the disk, as a nightly
 * sync of images that are not in memory does. Returns false where it is not permitted.
 */
function dropCaches() {
  try {
    spawnSync("sync");
    fs.writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}
const coldCache = dropCaches();

/** Runs `body` (which returns one measurement) `opts.runs` times after `prepare`, cache dropped. */
async function measure(body, prepare = () => {}) {
  const results = [];
  for (let i = 0; i < opts.runs; i++) {
    await prepare(i);
    if (coldCache) dropCaches();
    results.push(await body(i));
  }
  return {
    seconds: median(results.map((r) => r.seconds)),
    rssKiB: median(results.map((r) => r.rssKiB)),
    all: results.map((r) => r.seconds),
    last: results.at(-1),
  };
}

/**
 * Like `measure`, for several bodies whose runs alternate (A B A B …), each after its own
 * `prepare`: drift on a shared machine falls on all of them alike.
 */
async function measureAlternating(bodies, prepare = () => {}) {
  const results = bodies.map(() => []);
  for (let i = 0; i < opts.runs; i++) {
    for (let b = 0; b < bodies.length; b++) {
      await prepare(i);
      if (coldCache) dropCaches();
      results[b].push(await bodies[b](i));
    }
  }
  return results.map((rs) => ({
    seconds: median(rs.map((r) => r.seconds)),
    rssKiB: median(rs.map((r) => r.rssKiB)),
    all: rs.map((r) => r.seconds),
    last: rs.at(-1),
  }));
}

/** A sparse image of `apparent` bytes with `data` random bytes in EXTENTS evenly spread extents. */
function makeImage(file, { apparent, data, dataFile }) {
  const fd = fs.openSync(file, "w");
  const dense = dataFile ? fs.openSync(dataFile, "w") : null;
  fs.ftruncateSync(fd, apparent);
  const extent = data / EXTENTS;
  const stride = Math.floor(apparent / EXTENTS / BLOCK) * BLOCK;
  const buf = Buffer.allocUnsafe(Math.min(extent, 8 * MiB));
  const extents = [];
  for (let e = 0; e < EXTENTS; e++) {
    const at = e * stride;
    extents.push({ offset: at, length: extent });
    for (let done = 0; done < extent; done += buf.length) {
      const n = Math.min(buf.length, extent - done);
      crypto.randomFillSync(buf, 0, n);
      fs.writeSync(fd, buf, 0, n, at + done);
      if (dense !== null) fs.writeSync(dense, buf, 0, n, e * extent + done);
    }
  }
  fs.closeSync(fd);
  if (dense !== null) fs.closeSync(dense);
  return extents;
}

/** Overwrites `count` distinct data blocks with fresh random bytes. */
function changeBlocks(file, extents, count) {
  const blocks = [];
  for (const e of extents) for (let o = 0; o < e.length; o += BLOCK) blocks.push(e.offset + o);
  for (let i = blocks.length - 1; i > 0; i--) {
    const j = crypto.randomInt(i + 1);
    [blocks[i], blocks[j]] = [blocks[j], blocks[i]];
  }
  const fd = fs.openSync(file, "r+");
  const buf = Buffer.allocUnsafe(BLOCK);
  for (const at of blocks.slice(0, count)) {
    fs.writeSync(fd, crypto.randomFillSync(buf), 0, BLOCK, at);
  }
  fs.closeSync(fd);
}

const allocated = (file) => fs.statSync(file).blocks * 512;
const fmtS = (s) => s.toFixed(s < 10 ? 2 : 1);
const fmtMiB = (b) => (b >= GiB ? `${+(b / GiB).toFixed(1)} GiB` : `${+(b / MiB).toFixed(1)} MiB`);
const q = (p) => `'${p.replaceAll("'", "'\\''")}'`;

const rows = [];
function row(kase, tool, m, { bytes, vs = [] }) {
  rows.push({
    kase,
    tool,
    s: fmtS(m.seconds),
    mbps: bytes ? (bytes / m.seconds / 1e6).toFixed(0) : "",
    vs: vs.map(([ref, name]) => `${(m.seconds / ref.seconds).toFixed(2)}× ${name}`).join(", "),
  });
}

function printTable() {
  const head = {
    kase: "case",
    tool: "command",
    s: "median s",
    mbps: "MB/s",
    vs: "time ratio (ssync ÷ baseline)",
  };
  const all = [head, ...rows];
  const w = (k) => Math.max(...all.map((r) => r[k].length));
  const line = (r) =>
    `${r.kase.padEnd(w("kase"))}  ${r.tool.padEnd(w("tool"))}  ${r.s.padStart(w("s"))}  ${
      r.mbps.padStart(w("mbps"))
    }  ${r.vs}`;
  console.log(line(head));
  console.log("-".repeat(line(head).length + 12));
  let last = "";
  for (const r of rows) {
    console.log(line({ ...r, kase: r.kase === last ? "" : r.kase }));
    last = r.kase;
  }
}

// ---------------------------------------------------------------------------------------------

const apparent = opts.apparentGiB * GiB;
const data = opts.dataMiB * MiB;
const changed = Math.max(1, Math.round((data / BLOCK) * 0.01));
const t0 = Date.now();
const progress = (what) =>
  process.stderr.write(`bench: ${what} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);

progress(`making a ${fmtMiB(apparent)} image with ${fmtMiB(data)} of random data in ${work}`);
const src = f("src.img");
const extents = makeImage(src, { apparent, data, dataFile: f("data.bin") });

// Warm-up, untimed: runtime and module caches, worker start.
makeImage(f("warm.img"), { apparent: 8 * MiB, data: EXTENTS * BLOCK });
await ssync(f("warm.img"), f("warm-copy.img"));

progress("(a) first copy");
const rm = (p) => fs.rmSync(p, { force: true });
const first = await measure(() => ssync(src, f("dst.img")), () => rm(f("dst.img")));
if (allocated(f("dst.img")) > allocated(src) + BLOCK) {
  throw new Error("destination allocates more than the source");
}
const cp = await measure(
  () => sh(`cp --sparse=always ${q(src)} ${q(f("cp.img"))} && sync ${q(f("cp.img"))}`),
  () => rm(f("cp.img")),
);
const catSrc = await measure(() => sh(`cat ${q(src)} > /dev/null`));
const catData = await measure(() => sh(`cat ${q(f("data.bin"))} > /dev/null`));
row("(a) first copy", `${ssyncLabel} sync`, first, {
  bytes: data,
  vs: [[cp, "cp"], [catSrc, "cat src"], [catData, "cat data"]],
});
row("(a) first copy", "cp --sparse=always + sync FILE", cp, { bytes: data });
row("(a) first copy", `cat src >/dev/null (reads ${fmtMiB(apparent)})`, catSrc, { bytes: data });
row("(a) first copy", "cat data >/dev/null (dense copy of the data)", catData, { bytes: data });

progress(`(b) incremental: ${changed} blocks of 64 KiB changed per run`);
let rsync = null;
const [incremental, inplace] = await measureAlternating(
  [() => ssync(src, f("dst.img")), () => ssync(src, f("dst.img"), ["--inplace"])],
  () => changeBlocks(src, extents, changed),
);
for (const [m, name] of [[incremental, "sync"], [inplace, "sync --inplace"]]) {
  if (m.last.summary.blocksSent !== changed) {
    throw new Error(
      `incremental ${name} sent ${m.last.summary.blocksSent} blocks, expected ${changed}`,
    );
  }
}
const journalCost = incremental.seconds / inplace.seconds;
if (hasRsync) {
  await sh(`cp --sparse=always ${q(src)} ${q(f("rsync.img"))}`);
  // -I: compare every file even when size and mtime match; --fsync as ssync flushes too.
  rsync = await measure(
    () => run("rsync", ["--inplace", "--no-whole-file", "-I", "--fsync", src, f("rsync.img")]),
    () => changeBlocks(src, extents, changed),
  );
}
row("(b) incremental 1%", `${ssyncLabel} sync`, incremental, {
  bytes: data,
  vs: [[inplace, "--inplace"], ...(rsync ? [[rsync, "rsync"]] : []), [first, "first copy"]],
});
row("(b) incremental 1%", `${ssyncLabel} sync --inplace (no journal)`, inplace, {
  bytes: data,
  vs: [...(rsync ? [[rsync, "rsync"]] : []), [first, "first copy"]],
});
if (rsync) {
  row("(b) incremental 1%", "rsync --inplace --no-whole-file -I --fsync", rsync, { bytes: data });
} else {rows.push({
    kase: "(b) incremental 1%",
    tool: "rsync: skipped (not installed or --no-rsync)",
    s: "",
    mbps: "",
    vs: "",
  });}

progress("(c) identical rerun");
await ssync(src, f("dst.img"));
const identical = await measure(() => ssync(src, f("dst.img")));
if (identical.last.summary.blocksSent !== 0) throw new Error("identical rerun sent data");
row("(c) identical rerun", `${ssyncLabel} sync`, identical, {
  bytes: data,
  vs: [[first, "first copy"], [catData, "cat data"]],
});

progress("(d) peak RSS on a smaller image");
const smallApparent = Math.max(GiB / 4, Math.round(apparent / 8 / GiB) * GiB || GiB / 4);
const smallData = Math.max(
  EXTENTS * BLOCK,
  Math.floor(data / 8 / (EXTENTS * BLOCK)) * EXTENTS * BLOCK,
);
rm(f("dst.img"));
rm(f("rsync.img"));
rm(f("cp.img"));
makeImage(f("small.img"), { apparent: smallApparent, data: smallData });
const small = await measure(
  () => ssync(f("small.img"), f("small-copy.img")),
  () => rm(f("small-copy.img")),
);

const mibRss = (k) => `${(k / 1024).toFixed(0)} MiB`;
console.log();
console.log(
  `ssync bench: ${fmtMiB(apparent)} apparent, ${fmtMiB(data)} random data in ${EXTENTS} extents; ` +
    `${opts.runs} runs per command, median; ${os.availableParallelism()} cores.`,
);
console.log(
  "MB/s = allocated source data (10^6 B) per second, for every row. " +
    (coldCache
      ? "Page cache dropped before every run:\nreads come from the disk.\n"
      : "Page cache is warm (could not\ndrop it: not root): reads come from memory, so this measures CPU, not the disk.\n") +
    "Times include process start-up. ssync and the baselines fsync the destination.",
);
console.log();
printTable();
console.log();
console.log(
  `(b) the crash-safe journal on a 1% change: ${journalCost.toFixed(2)}× the time of --inplace ` +
    `(target ≤ 1.10×${journalCost <= 1.1 ? ", met" : ", NOT met"}; runs ${
      incremental.all.map(fmtS).join(" ")
    } s vs ${inplace.all.map(fmtS).join(" ")} s).`,
);
console.log();
console.log("(d) peak RSS of ssync sync (first copy), median:");
console.log(
  `    ${fmtMiB(smallApparent)} apparent / ${fmtMiB(smallData)} data: ${mibRss(small.rssKiB)}`,
);
console.log(`    ${fmtMiB(apparent)} apparent / ${fmtMiB(data)} data: ${mibRss(first.rssKiB)}`);
console.log(
  `    (incremental ${mibRss(incremental.rssKiB)}, identical ${mibRss(identical.rssKiB)}; ${
    gnuTime ? "GNU time %M" : "VmHWM polled"
  })`,
);
progress("done");
