/**
 * Compression by bottleneck (issue 9, scope 3): `--compress=auto|never|always`.
 *
 * 1. CompressPolicy, fed backlog figures, DATA sent and a clock (a simulated link or receiver):
 *    "auto"'s trials (compressing kept only where it raised the rate of raw DATA sent: a slow
 *    link, not a receiver's CPU), their back-off, the hysteresis of its states, the level's step
 *    up and down, "never" and "always".
 * 2. dataOps compresses per 64 KiB unit: every compressible unit of a run goes as zstd, even
 *    after random ones; the ops tile the run.
 * 3. End to end, real files, real TCP on 127.0.0.1 (a listener in this process):
 *    - a local sync sends no compressed DATA ("auto"; "always" does compress);
 *    - `never` sends none over a slow link, push and pull;
 *    - `always` over a fast link compresses every compressible block, per block, among
 *      random ones (mostly random runs, which the old per-run back-off sent raw);
 *    - `auto` over a link that never backs up sends raw; over a slow relay (its queue backs
 *      up) it compresses, push and pull.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { runSyncCommand } from "../src/cli/sync-command.ts";
import { CompressPolicy, FULL, HIGH_LEVEL, LEAVE_MS, LEVEL, LOW, PHASE_IDLE_MS, RECHECK_MAX_MS, RECHECK_MS, TRIAL_SPACING } from "../src/engine/compress-policy.ts";
import { COMPRESS_UNIT, dataOps } from "../src/engine/data-ops.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { decompress, initZstd } from "../src/platform/zstd.ts";
import { syncLocal } from "../src/session/local-sync.ts";
import { UsageError } from "../src/util/errors.ts";
import { authorize, clientSync, makeKey, startListener } from "./helpers/network.ts";
import { RecordingChannel } from "./helpers/recording-channel.ts";
import { SlowRelay } from "./helpers/slow-relay.ts";
import { fileHash, withTempDir } from "./helpers/sparse.ts";

const MiB = 1 << 20;
const BLOCK = 64 * 1024;
const T = { timeout: 60_000 };

/** 64 KiB that zstd shrinks to about 30%: words and numbers picked by a seeded generator. */
function compressibleBlock(seed: number): Uint8Array {
  const words = ["sparse", "image", "block", "extent", "journal", "commit", "digest", "zero", "hole", "guest", "disk", "sync"];
  const out = new Uint8Array(BLOCK);
  let x = (seed * 2654435761) >>> 0 || 1;
  let at = 0;
  while (at < BLOCK) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const w = `${words[(x >>> 0) % words.length]}${(x >>> 8) % 100} `;
    for (let i = 0; i < w.length && at < BLOCK; i++) out[at++] = w.charCodeAt(i);
  }
  return out;
}

/** A file of 64 KiB blocks: kinds[i] says whether block i is compressible ("c") or random ("r"). */
function writeBlocks(file: string, kinds: string): void {
  const fd = fs.openSync(file, "w");
  try {
    for (let i = 0; i < kinds.length; i++) {
      const block = kinds[i] === "c" ? compressibleBlock(i + 1) : crypto.randomBytes(BLOCK);
      fs.writeSync(fd, block, 0, BLOCK, i * BLOCK);
    }
  } finally {
    fs.closeSync(fd);
  }
}

describe("CompressPolicy (fed backlog figures, DATA sent and a clock)", { timeout: 10_000 }, () => {
  /** A policy over a backlog and a clock the test sets; no DATA is sent. */
  function fed(mode: "auto" | "never" | "always") {
    const at = { backlog: 0, now: 0 };
    const policy = new CompressPolicy({ mode, backlog: () => at.backlog, now: () => at.now });
    /** Samples (level(), as at job starts) every `step` ms for `ms` ms at `backlog`; the levels seen. */
    const run = (backlog: number, ms: number, step = 10) => {
      at.backlog = backlog;
      const levels: number[] = [];
      for (let t = 0; t < ms; t += step) {
        at.now += step;
        levels.push(policy.level());
      }
      return levels;
    };
    return { policy, at, run };
  }

  /**
   * A sync through its bottlenecks, simulated in 5 ms steps: jobs of 1 MiB whose level is asked
   * as they start, AHEAD of them started before their DATA goes out (the ranges in flight), each
   * job's DATA sent as fast as the slower of a link and a CPU lets it: the link passes `link`
   * wire bytes per ms; the CPU `cpu[i]` raw bytes per ms of a job at level 0, LEVEL, HIGH_LEVEL
   * (i = 0, 1, 2; absent: no limit). zstd makes 1/`ratios[i - 1]` of the data at LEVEL and
   * HIGH_LEVEL (1: random; default [1, 1]). The queue's backlog is `backlog(t)` (default:
   * backed up). Returns the raw bytes sent, those of compressing jobs, and the levels asked.
   */
  function simulated(mode: "auto" | "always" = "auto") {
    const at = { backlog: 1, now: 0 };
    const policy = new CompressPolicy({ mode, backlog: () => at.backlog, now: () => at.now });
    const JOB = MiB;
    const AHEAD = 24;
    const jobs: number[] = [];
    let left = JOB;
    type Sim = { link?: number; cpu?: readonly [number, number, number]; ratios?: readonly [number, number]; backlog?: (t: number) => number };
    const run = (ms: number, o: Sim) => {
      const STEP = 5;
      const out = { raw: 0, packed: 0, levels: [] as number[] };
      const start = at.now;
      for (let t = 0; t < ms; t += STEP) {
        at.now += STEP;
        at.backlog = o.backlog?.(at.now - start) ?? 1;
        while (jobs.length < AHEAD) jobs.push(policy.level());
        let cap = STEP;
        while (cap > 1e-9) {
          const level = jobs[0];
          const i = level === 0 ? 0 : level === LEVEL ? 1 : 2;
          const c = i === 0 ? 1 : (o.ratios ?? [1, 1])[i - 1];
          const bytesPerMs = Math.min(o.link !== undefined ? o.link * c : Infinity, o.cpu?.[i] ?? Infinity);
          const n = Math.min(left, cap * bytesPerMs, 64 * 1024);
          policy.sent(n, n / c, level);
          cap -= n / bytesPerMs;
          left -= n;
          out.raw += n;
          if (level > 0) out.packed += n;
          if (left <= 0) {
            jobs.shift();
            const next = policy.level();
            jobs.push(next);
            out.levels.push(next);
            left = JOB;
          }
        }
      }
      return out;
    };
    return { policy, at, run };
  }
  const only = <T>(values: readonly T[]) => [...new Set(values)];
  const outcomesOf = (policy: CompressPolicy) => policy.outcomes.map((o) => o.outcome);
  /** 1 Gbit/s, in bytes per ms; a receiver that takes 300 MB/s raw, less when it also decompresses (and the sender compresses, on the same cores). */
  const GBIT = 117_000;
  const RECEIVER = { cpu: [300_000, 250_000, 180_000], ratios: [2, 2.2] } as const;

  test("auto: raw while the queue stays short, or backs up only in a burst; a trial once it stays backed up", () => {
    const { policy, run } = fed("auto");
    assert.deepEqual(only(run(0, 500)), [0]);
    assert.deepEqual(only(run(FULL * 0.8, 2000)), [0], "a queue a fifth full is no bottleneck");
    run(0, 1000);
    assert.deepEqual(only(run(4, 40)), [0], "a 40 ms burst");
    assert.deepEqual(only(run(0, 1000)), [0]);
    assert.equal(policy.trying, false);
    const levels = run(4, 200);
    assert.deepEqual(only(levels), [0], "the trial's plain phase first: the jobs in flight are plain");
    assert.equal(policy.trying, true);
    assert.equal(policy.state, "raw");
  });

  test("auto over a slow link: the trial pays; compressed nearly all the time, rechecks rare; the level rises", () => {
    const { policy, run } = simulated();
    const first = run(60_000, { link: GBIT, ratios: [2, 2.3] });
    assert.equal(outcomesOf(policy)[0], "pays");
    assert.deepEqual(only(outcomesOf(policy)), ["pays"]);
    assert.ok(policy.outcomes.length <= 6, `${policy.outcomes.length} trials in 60 s`);
    assert.ok(first.packed >= first.raw * 0.93, `${(first.packed / first.raw * 100).toFixed(1)}% of the bytes compressed`);
    assert.equal(policy.state, "high", "the queue stayed full: the level rose");
    assert.ok(first.levels.includes(HIGH_LEVEL) && first.levels.includes(LEVEL));
  });

  test("auto with the receiver's CPU the bottleneck: the trial costs; raw nearly all the time, trials back off", () => {
    const { policy, run } = simulated();
    const r = run(120_000, RECEIVER);
    assert.ok(policy.outcomes.length >= 3, `${outcomesOf(policy)}`);
    assert.deepEqual(only(outcomesOf(policy)), ["costs"]);
    // Holds of 4, 8, 16, 32, 60 s: about one trial per doubling.
    assert.ok(policy.outcomes.length <= 6, `${policy.outcomes.length} trials in 120 s`);
    assert.ok(r.packed <= r.raw * 0.03, `${(r.packed / r.raw * 100).toFixed(1)}% of the bytes compressed`);
    assert.equal(policy.state, "raw");
  });

  test("auto over a slow link where HIGH_LEVEL costs more CPU than the link allows: LEVEL, the raise held off", () => {
    const { policy, run } = simulated();
    const r = run(60_000, { link: GBIT, cpu: [Infinity, Infinity, 150_000], ratios: [2, 2.3] });
    assert.equal(outcomesOf(policy)[0], "pays");
    assert.ok(outcomesOf(policy).includes("costs"), `${outcomesOf(policy)}`);
    assert.equal(policy.state, "bound");
    const high = r.levels.filter((l) => l === HIGH_LEVEL).length;
    assert.ok(high <= r.levels.length * 0.1, `${high} of ${r.levels.length} jobs at HIGH_LEVEL`);
    assert.ok(r.packed >= r.raw * 0.93);
  });

  test("auto: a trial's first phase is measured on DATA of its own level only (not on jobs of another level still in flight)", () => {
    const { policy, at, run } = simulated();
    run(1500, { link: GBIT, ratios: [2, 2.3], backlog: () => 0.5 }); // pays; below HIGH_FULL: no raise
    assert.deepEqual(outcomesOf(policy), ["pays"]);
    /** DATA of jobs at `level`, `rate` raw bytes a ms, for `ms` (as if sent whatever level() says). */
    const feed = (level: number, rate: number, ms: number, ratio = 2) => {
      for (let t = 0; t < ms; t += 5) {
        at.now += 5;
        policy.sent(rate * 5, level > 0 ? rate * 5 / ratio : rate * 5, level);
        policy.level();
      }
    };
    // HIGH_LEVEL jobs still going out (slowly) as the recheck [LEVEL, 0] comes due, then LEVEL
    // ones (fast), then plain ones in between: measured right, LEVEL pays; measured on the
    // HIGH_LEVEL jobs, it would cost.
    feed(HIGH_LEVEL, 60_000, 16_000); // the recheck comes due: ≥ TRIAL_SPACING × the first trial's length
    assert.equal(policy.trying, true, `the recheck is due: ${JSON.stringify(policy.outcomes)} ${policy.state} ${at.now}`);
    feed(LEVEL, 234_000, 600);
    feed(0, 117_000, 1000);
    assert.deepEqual(policy.outcomes.map((o) => [o.levels, o.outcome]), [[[0, LEVEL], "pays"], [[LEVEL, 0], "pays"]]);
  });

  test("auto: compressing that raises the rate pays, whatever the bottleneck", () => {
    const { policy, run } = simulated();
    // A CPU that compressed data costs less than raw data (zstd's work < the AEAD's it saves).
    const r = run(20_000, { cpu: [300_000, 400_000, 300_000], ratios: [2, 2.2] });
    const compressing = policy.outcomes.filter((o) => o.levels.includes(0)).map((o) => o.outcome);
    assert.ok(compressing.length >= 2, `${compressing}`);
    assert.deepEqual(only(compressing), ["pays"]);
    assert.ok(r.packed >= r.raw * 0.9);
  });

  test("auto over a slow link, random data first: it goes on compressing (unclear), and saves once the data compresses", () => {
    const { policy, run } = simulated();
    run(10_000, { link: GBIT, ratios: [1, 1] });
    assert.ok(policy.outcomes.length >= 1);
    assert.deepEqual(only(outcomesOf(policy)), ["unclear"]);
    const later = run(20_000, { link: GBIT, ratios: [2.5, 2.7] });
    assert.ok(later.packed >= later.raw * 0.9, `${(later.packed / later.raw * 100).toFixed(1)}% compressed`);
    assert.equal(outcomesOf(policy).at(-1), "pays");
  });

  test("auto: a queue full half the time (the kernel hides the rest) still counts as backed up", () => {
    const { policy, run } = simulated();
    const r = run(10_000, { link: GBIT, ratios: [2, 2.3], backlog: (t) => (Math.floor(t / 20) % 2 === 0 ? 1 : 0) });
    assert.deepEqual(only(outcomesOf(policy)), ["pays"]);
    assert.ok(r.packed >= r.raw * 0.85, `${(r.packed / r.raw * 100).toFixed(1)}% compressed`);
  });

  test("auto: a queue that drains ends compression soon after LEAVE_MS, in a trial or not", () => {
    for (const ms of [100, 2000, 6000]) {
      const { policy, run } = simulated();
      run(ms, { link: GBIT, ratios: [2, 2.3] }); // backed up: a trial starts, and may end
      const drained = run(1400 + LEAVE_MS, { link: GBIT, ratios: [2, 2.3], backlog: () => 0 });
      assert.equal(policy.state, "raw", `after ${ms} ms`);
      assert.equal(policy.trying, false);
      assert.equal(drained.levels.at(-1), 0);
    }
  });

  test("auto: a trial that gets no DATA decides nothing, after PHASE_IDLE_MS, and holds trials off TRIAL_SPACING times that long", () => {
    const { policy, run } = fed("auto");
    run(1, 300);
    assert.equal(policy.trying, true);
    run(1, PHASE_IDLE_MS);
    assert.deepEqual(outcomesOf(policy), ["undecided"]);
    assert.equal(policy.state, "raw");
    const took = policy.outcomes[0].took;
    assert.ok(took >= PHASE_IDLE_MS && took < PHASE_IDLE_MS + 300, `took ${took} ms`);
    assert.deepEqual(only(run(1, TRIAL_SPACING * took - 1000)), [0]);
    assert.equal(policy.trying, false, "held off");
    run(1, 2000);
    assert.equal(policy.trying, true, "and after the hold, tried again");
  });

  test("auto over a link of 4 MB/s: the trial outlasts the jobs in flight (seconds of them) and pays", () => {
    const { policy, run } = simulated();
    const r = run(120_000, { link: 4_000, ratios: [2, 2.3] });
    assert.equal(outcomesOf(policy)[0], "pays");
    assert.ok(!outcomesOf(policy).includes("undecided"), `${outcomesOf(policy)}`);
    assert.ok(r.packed >= r.raw * 0.8, `${(r.packed / r.raw * 100).toFixed(1)}% compressed`);
  });

  test("auto over a link of 1 MB/s: trials (each sends ~16 MiB at its plain level, tens of seconds) stay a small share", () => {
    const { policy, run } = simulated();
    const r = run(600_000, { link: 1_000, ratios: [2, 2.3] });
    assert.equal(outcomesOf(policy)[0], "pays");
    assert.ok(r.packed >= r.raw * 0.85, `${(r.packed / r.raw * 100).toFixed(1)}% compressed; ${JSON.stringify(policy.outcomes)}`);
  });

  test("auto over a slow link where HIGH_LEVEL is CPU-bound: raises cost and are held off, rechecks come on time and pay", () => {
    const { policy, run } = simulated();
    // Level 3 is CPU-bound at 60 MB/s raw, below the link's raw rate at level 0: a recheck
    // measured on level-3 jobs would find compressing slower than raw.
    const r = run(120_000, { link: GBIT, cpu: [Infinity, Infinity, 60_000], ratios: [2, 2.3] });
    const records = policy.outcomes;
    const rechecks = records.filter((o) => o.levels[0] === LEVEL && o.levels[1] === 0);
    const raises = records.filter((o) => o.levels[1] === HIGH_LEVEL);
    assert.ok(raises.length >= 2 && raises.every((o) => o.outcome === "costs"), JSON.stringify(records));
    assert.ok(rechecks.length >= 3 && rechecks.every((o) => o.outcome === "pays"), JSON.stringify(records));
    // Each recheck on time, the raise held off or not: it ends its own length after it is due,
    // due RECHECK_MS after the trial that entered BOUND, then twice that, and so on up to
    // RECHECK_MAX_MS, but never sooner than TRIAL_SPACING times the last such trial's length.
    let interval = RECHECK_MS;
    let last = records[0];
    for (const o of rechecks) {
      const due = last.at + Math.max(interval, TRIAL_SPACING * last.took);
      assert.ok(o.at - o.took <= due + 50, `recheck ${JSON.stringify(o)} due at ${Math.round(due)}; ${JSON.stringify(records)}`);
      last = o;
      interval = Math.min(RECHECK_MAX_MS, 2 * interval);
    }
    assert.equal(policy.state, "bound");
    assert.ok(r.packed >= r.raw * 0.93, `${(r.packed / r.raw * 100).toFixed(1)}% compressed`);
  });

  test("auto: leaves only after the queue stayed nearly empty for LEAVE_MS; between LOW and FULL it holds", () => {
    const { policy, run } = simulated();
    run(1500, { link: GBIT, ratios: [2, 2.3], backlog: () => 0.5 });
    assert.deepEqual(outcomesOf(policy), ["pays"]);
    assert.equal(policy.state, "bound");
    assert.deepEqual(only(run(2000, { link: GBIT, ratios: [2, 2.3], backlog: () => (LOW + FULL) / 2 }).levels), [LEVEL], "in between: hold");
    run(300, { link: GBIT, ratios: [2, 2.3], backlog: () => 0.5 });
    const leaving = run(3000, { link: GBIT, ratios: [2, 2.3], backlog: () => 0 }).levels;
    assert.equal(leaving[0], LEVEL);
    assert.equal(leaving.at(-1), 0);
    assert.equal(policy.state, "raw");
    // The average must first decay below LOW (TAU_MS·ln(1/LOW)), then stay there LEAVE_MS (GBIT·2 bytes a ms, 1 MiB jobs).
    assert.ok(leaving.indexOf(0) * MiB / (2 * GBIT) >= LEAVE_MS, `left after ${leaving.indexOf(0)} jobs`);
    // Raw again: a queue between LOW and FULL does not bring compression back.
    assert.deepEqual(only(run(3000, { link: GBIT, ratios: [2, 2.3], backlog: () => (LOW + FULL) / 2 }).levels), [0]);
  });

  test("the level steps up while the queue stays full for RAISE_MS, and back once it drains below FULL", () => {
    const { policy, at, run } = simulated();
    const rising = run(4000, { link: GBIT, ratios: [2, 2.3] });
    assert.equal(rising.levels.at(-1), HIGH_LEVEL);
    assert.equal(policy.state, "high");
    // Drained: no DATA, just job starts.
    at.backlog = 0;
    for (let t = 0; t < 500; t += 10) {
      at.now += 10;
      policy.level();
    }
    assert.equal(policy.level(), LEVEL, "back to LEVEL, not yet raw");
    assert.equal(policy.state, "bound");
    assert.ok(policy.fill < FULL);
  });

  test("never: 0 whatever the backlog; always: never 0, even with no backlog, no trials, and its level adapts too", () => {
    const never = fed("never");
    assert.deepEqual(only([...never.run(0, 200), ...never.run(100, 3000)]), [0]);
    const always = fed("always");
    assert.deepEqual(only(always.run(0, 5000)), [LEVEL]);
    assert.equal(always.run(4, 2000).at(-1), HIGH_LEVEL);
    assert.deepEqual(only(always.run(0, 5000).slice(50)), [LEVEL]);
    const cpu = simulated("always");
    const r = cpu.run(10_000, RECEIVER);
    assert.equal(r.packed, r.raw, "always compresses, even where it costs");
  });

  test("a backlog that is no finite number counts as none", () => {
    const { policy, run } = fed("auto");
    run(NaN, 1000);
    assert.equal(policy.state, "raw");
    assert.equal(policy.fill, 0);
    assert.throws(() => new CompressPolicy({ mode: "sometimes" as "auto", backlog: () => 0 }), TypeError);
  });
});

describe("dataOps: per 64 KiB unit", { timeout: 10_000 }, () => {
  before(() => initZstd());

  test("every compressible unit goes zstd, also after random ones; the ops tile the run", () => {
    const kinds = "rrrrrrrcrrrrrrrc" + "crcrcrcr";
    const raw = new Uint8Array(kinds.length * BLOCK);
    for (let i = 0; i < kinds.length; i++) raw.set(kinds[i] === "c" ? compressibleBlock(i) : crypto.randomBytes(BLOCK), i * BLOCK);
    const base = 7 * MiB;
    const ops = dataOps(raw, base, { level: 1, blockSize: 4096, withoutPayload: false });
    let at = base;
    for (const op of ops) {
      assert.equal(op.kind, "data");
      if (op.kind !== "data") continue;
      assert.equal(op.offset, at, "in order, no gap");
      at += op.length;
      const first = (op.offset - base) / BLOCK;
      const span = kinds.slice(first, first + op.length / BLOCK);
      if (op.zstd) {
        assert.equal(op.length, COMPRESS_UNIT);
        assert.equal(span, "c");
        assert.ok(op.payload!.length < (op.length * 7) / 8);
        assert.deepEqual(decompress(op.payload!, op.length), raw.subarray(op.offset - base, op.offset - base + op.length));
      } else {
        assert.match(span, /^r+$/, `raw op over ${span}`);
        assert.deepEqual(op.payload, raw.subarray(op.offset - base, op.offset - base + op.length));
      }
    }
    assert.equal(at, base + raw.length);
    assert.equal(ops.filter((o) => o.kind === "data" && o.zstd).length, [...kinds].filter((k) => k === "c").length);
    // Consecutive random units go as one raw op.
    assert.equal(ops.length, 2 + 2 + 8);
  });

  test("level 0 and dry runs: one op for the run, untried", () => {
    const raw = compressibleBlock(1);
    assert.deepEqual(dataOps(raw, 0, { level: 0, blockSize: 4096, withoutPayload: false }), [{ kind: "data", offset: 0, length: BLOCK, payload: raw, zstd: false }]);
    assert.deepEqual(dataOps(raw, 0, { level: 1, blockSize: 4096, withoutPayload: true }), [{ kind: "data", offset: 0, length: BLOCK, payload: undefined, zstd: false }]);
  });
});

describe("compression end to end", { timeout: 120_000 }, () => {
  let pool: WorkerPool;
  before(() => {
    pool = new WorkerPool({ size: 2 });
  });
  after(async () => {
    await pool[Symbol.asyncDispose]();
  });

  test("a local sync sends no compressed DATA; with --compress=always it does", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      writeBlocks(src, "c".repeat(128)); // 8 MiB that zstd shrinks to about 30%
      const local = await syncLocal(src, path.join(dir, "local.img"), { blockSize: BLOCK, hash: "poly1305", dryRun: false, pool });
      assert.equal(local.local.bytesSent, 8 * MiB);
      assert.equal(local.local.dataBytesOnWire, local.local.bytesSent, "raw DATA only");
      assert.equal(fileHash(path.join(dir, "local.img")), fileHash(src));
      // Through the CLI's options: the default is auto, "always" compresses.
      const auto = await runSyncCommand(src, path.join(dir, "cli-auto.img"), {});
      assert.equal(auto.dataBytesOnWire, auto.dataBytesSent);
      const always = await runSyncCommand(src, path.join(dir, "cli-always.img"), { compress: "always" });
      assert.ok(always.dataBytesOnWire < always.dataBytesSent / 2, `${always.dataBytesOnWire} of ${always.dataBytesSent}`);
      assert.equal(fileHash(path.join(dir, "cli-always.img")), fileHash(src));
      await assert.rejects(runSyncCommand(src, path.join(dir, "x.img"), { compress: "sometimes" }), UsageError);
    });
  });

  /** A listener on 127.0.0.1 serving dir/root, and what a client needs to use it. */
  async function serve(dir: string) {
    const server = await startListener(dir, { pool });
    const key = await makeKey(path.join(dir, "client.key"));
    authorize(server.authorizedKeys, key);
    return { server, key, knownHosts: path.join(dir, "known_hosts") };
  }

  test("--compress=always over TCP: every compressible block goes compressed, per block, among random ones", T, async () => {
    await withTempDir(async (dir) => {
      const { server, key, knownHosts } = await serve(dir);
      try {
        // Runs of 16 blocks, 14 random: compressed whole, a run would not save 1/8.
        const kinds = "rrrrrrrcrrrrrrrc".repeat(4) + "rcrcrcrcrcrcrcrc";
        const src = path.join(dir, "src.img");
        writeBlocks(src, kinds);
        let wire: RecordingChannel | undefined;
        const report = await clientSync(server, {
          mode: "push",
          local: src,
          name: "always.img",
          key,
          pool,
          knownHosts,
          compress: "always",
          wrap: (c) => (wire = new RecordingChannel(c)),
        });
        assert.equal(fileHash(path.join(server.root, "always.img")), fileHash(src));
        const data = wire!.ofType("sent", "DATA");
        for (let i = 0; i < kinds.length; i++) {
          const at = i * BLOCK;
          const op = data.find((m) => m.offset! <= at && at < m.offset! + m.length!);
          assert.ok(op, `block ${i} sent`);
          if (kinds[i] === "c") assert.deepEqual([op.zstd, op.offset, op.length], [true, at, BLOCK], `block ${i} (compressible)`);
          else assert.equal(op.zstd, false, `block ${i} (random)`);
        }
        const compressible = [...kinds].filter((k) => k === "c").length * BLOCK;
        assert.ok(report.local.dataBytesOnWire < kinds.length * BLOCK - compressible / 2, `${report.local.dataBytesOnWire} on the wire`);
      } finally {
        await server.listener.close();
      }
    });
  });

  test("auto over a link that never backs up: raw (the data fits in the socket's buffers)", T, async () => {
    await withTempDir(async (dir) => {
      const { server, key, knownHosts } = await serve(dir);
      try {
        const src = path.join(dir, "src.img");
        writeBlocks(src, "c".repeat(16)); // 1 MiB: less than FULL of the channel's 4 MiB threshold
        for (const mode of ["push", "pull"] as const) {
          const name = `small-${mode}.img`;
          if (mode === "pull") fs.copyFileSync(src, path.join(server.root, name));
          const local = mode === "push" ? src : path.join(dir, name);
          const report = await clientSync(server, { mode, local, name, key, pool, knownHosts });
          assert.equal(report.local.bytesSent, MiB, mode);
          assert.equal(report.local.dataBytesOnWire, MiB, `${mode}: raw`);
          assert.equal(fileHash(mode === "push" ? path.join(server.root, name) : local), fileHash(src));
        }
      } finally {
        await server.listener.close();
      }
    });
  });

  test("over a slow link (a rate-limited relay): auto compresses, never does not; push and pull", T, async () => {
    await withTempDir(async (dir) => {
      const { server, key, knownHosts } = await serve(dir);
      // Slow enough that the link stays the bottleneck on a loaded machine: the whole sync
      // (source, destination and relay) shares this one process's thread.
      const rate = 8 * MiB;
      await using relay = await SlowRelay.start(server.listener.port, { upBytesPerSecond: rate, downBytesPerSecond: rate });
      const viaRelay = { listener: { port: relay.port, address: `127.0.0.1:${relay.port}` } };
      try {
        // never: 8 MiB shows it (1 s at the rate); auto: enough that the raw start (the
        // socket buffers fill before the queue backs up: up to ~20 MiB here; then the trial's
        // plain phase and the jobs started in it) is the lesser part.
        const sizes = { never: 8 * MiB, auto: 64 * MiB };
        for (const [compress, size] of Object.entries(sizes)) writeBlocks(path.join(dir, `src-${compress}.img`), "c".repeat(size / BLOCK));
        fs.copyFileSync(path.join(dir, "src-auto.img"), path.join(server.root, "pulled-auto.img"));
        fs.copyFileSync(path.join(dir, "src-never.img"), path.join(server.root, "pulled-never.img"));
        for (const mode of ["push", "pull"] as const) {
          for (const compress of ["never", "auto"] as const) {
            const size = sizes[compress];
            const src = path.join(dir, `src-${compress}.img`);
            const name = `${mode === "push" ? "pushed" : "pulled"}-${compress}.img`;
            const local = mode === "push" ? src : path.join(dir, name);
            let wire: RecordingChannel | undefined;
            const report = await clientSync(viaRelay, {
              mode,
              local,
              name,
              key,
              pool,
              knownHosts,
              compress,
              wrap: (c) => (wire = new RecordingChannel(c)),
            });
            assert.equal(fileHash(mode === "push" ? path.join(server.root, name) : local), fileHash(src), name);
            assert.equal(report.local.bytesSent, size, name);
            const zstd = wire!.ofType(mode === "push" ? "sent" : "received", "DATA").filter((m) => m.zstd).length;
            if (compress === "never") {
              assert.equal(zstd, 0, name);
              assert.equal(report.local.dataBytesOnWire, size, name);
            } else {
              // The jobs started before the queue filled, and in the trial's plain phase, go
              // raw; once compressing showed it got more through, the rest goes compressed.
              assert.ok(zstd >= size / BLOCK / 4, `${name}: ${zstd} zstd DATA`);
              assert.ok(report.local.dataBytesOnWire < size * 0.75, `${name}: ${report.local.dataBytesOnWire} of ${size} on the wire`);
            }
          }
        }
      } finally {
        await server.listener.close();
      }
    });
  });
});
