/**
 * Crash injection (issue 8, acceptance 1): `SSYNC_TEST_CRASH=<point>[:<n>]` makes the
 * destination process SIGKILL itself at that point (src/storage/crash-point.ts). For every
 * point, and N over 1, 2, 5 and the last record (partial-write: 1, 2, 5), on a file (an
 * update, and a new file) and on a loop block device (skipped, saying why, without one):
 * 1. run `ssync sync B DST` over DST = A with the point set: it must die there (SIGKILL; a
 *    sync that completes means the point was never reached, which fails the case too);
 * 2. either `ssync recover DST` (exit 0), then sha256(DST) is exactly A for every point
 *    before `committed` and exactly B from `committed` on (a new file: absent, then B);
 *    or just rerun the sync: its open recovers first, so it must send exactly what an
 *    uninterrupted A → B sync sends (old image) or nothing (new image);
 * 3. then a rerun exits 0, DST is identical to B, and no journal or partial file is left.
 * Every point gets both checks of step 2: the last N both, the other Ns one each in turn
 * (the check does not depend on N; the state it finds does), which keeps the file < 90 s.
 * Recovery itself is crashed too (`recover:N` after a crash at `committed`), then recovered
 * again. "Last" is the number of records in the journal a crash at `committed` leaves (read
 * with storage/journal-file.ts); `point:last+1` must not be reached (the sync or the
 * recovery then completes). Through a listener: a push (the listener is the destination, to
 * a file under its root and to a block-device export; restarted, the listener recovers
 * before it listens, and says so) and a pull (the client is the destination).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { type CliListener, type CliResult, startCliListener } from "../helpers/network.ts";
import { loopDeviceUnavailableReason, withLoopDevice } from "../helpers/loop-device.ts";
import { withTempDir } from "../helpers/sparse.ts";
import { readJournal } from "../../src/storage/journal-file.ts";
import { journalOf, stateJournalDir, workFileBeside } from "../../src/storage/work-files.ts";
import {
  checkIdentical,
  classify,
  cliEnv,
  type CliEnv,
  copySparse,
  type Found,
  type Image,
  lastLine,
  leftovers,
  makeImagePair,
  networkEnvs,
  ssync,
} from "../helpers/crash-images.ts";

const T = { timeout: 240_000 };
/** 8 MiB images (A: 2 MiB of data in 5 extents; B: 2.1 MiB), 128 KiB units. */
const SCALE = 1 / 8;

/** The points of an update, in order; `counted` ones take N. */
const UPDATE_POINTS = [
  { point: "journal-write", counted: true, image: "old" },
  { point: "journal-synced", counted: false, image: "old" },
  { point: "committed", counted: false, image: "new" },
  { point: "apply", counted: true, image: "new" },
  { point: "destination-synced", counted: false, image: "new" },
  { point: "journal-removed", counted: false, image: "new" },
] as const;
const NEW_FILE_POINTS = [
  { point: "partial-write", counted: true, image: "old" },
  { point: "partial-synced", counted: false, image: "old" },
  { point: "renamed", counted: false, image: "new" },
] as const;
const NS = [1, 2, 5];

interface Target {
  label: string;
  dst: string;
  env: CliEnv;
  a: Image;
  b: Image;
  /** null: DST did not exist before the sync. */
  old: string | null;
  /** Where DST's journal goes. */
  journal: string;
  /** DST := the old image exactly (or absent), every journal and partial file of it removed. */
  reset(): void;
  /** Journal or partial files of DST left behind. */
  leftovers(): string[];
}

/** Where the journal of the block device `device` goes with `env`'s state folder. */
function deviceJournal(device: string, env: CliEnv): string {
  const rdev = fs.statSync(device, { bigint: true }).rdev;
  return journalOf(device, { kind: "block-device", rdev, journalDir: stateJournalDir(env.env) }).path;
}

/** What the journals folder of a state dir holds (block devices; a file's journal is beside it). */
function stateJournals(env: CliEnv): string[] {
  const dir = stateJournalDir(env.env);
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((n) => path.join(dir, n)) : [];
}

/** `grow`: from the smaller image to the larger (a SIZE record that extends the file). */
function fileTarget(dir: string, options: { fresh: boolean; grow?: boolean }): Target {
  const env = cliEnv(dir, "local");
  const pair = makeImagePair(dir, { scale: SCALE });
  const [a, b] = options.grow ? [pair.b, pair.a] : [pair.a, pair.b];
  const out = path.join(dir, "out");
  fs.mkdirSync(out);
  const dst = path.join(out, options.fresh ? "new.img" : "vm.img");
  const strays = () => [...leftovers(out).map((n) => path.join(out, n)), ...stateJournals(env)];
  return {
    label: options.fresh ? "new file" : options.grow ? "growing file" : "file",
    dst,
    env,
    a,
    b,
    old: options.fresh ? null : a.hash,
    journal: workFileBeside(dst, "journal"),
    reset() {
      for (const p of strays()) fs.rmSync(p, { force: true });
      if (options.fresh) fs.rmSync(dst, { force: true });
      else copySparse(a.file, dst);
    },
    leftovers: strays,
  };
}

/** Writes every byte of `image` onto the device (zeros included) and flushes it. */
function writeDevice(device: string, image: Image): void {
  const src = fs.openSync(image.file, "r");
  const dst = fs.openSync(device, "r+");
  try {
    const buf = new Uint8Array(1 << 20);
    for (let pos = 0; pos < image.size; pos += buf.length) {
      const n = fs.readSync(src, buf, 0, buf.length, pos);
      fs.writeSync(dst, buf, 0, n, pos);
    }
    fs.fsyncSync(dst);
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
}

/**
 * Loop devices are shared by every process on the machine: one detached or reused by another
 * (a concurrent test run) makes writes fail with ENOSPC. Say so instead.
 */
function stillOurs(device: string, backing: string): void {
  let back = "";
  try {
    back = execFileSync("losetup", ["-n", "-O", "BACK-FILE", device], { encoding: "utf8" }).trim();
  } catch { /* detached: no output */ }
  if (back !== fs.realpathSync(backing)) {
    throw new Error(`Cannot go on: ${device} was detached or reattached by another process (its backing file is now "${back}")`);
  }
}

async function withDeviceTarget(
  dir: string,
  body: (target: Target) => Promise<void>,
): Promise<boolean> {
  const env = cliEnv(dir, "local");
  const { a, b } = makeImagePair(dir, { scale: SCALE, sameSize: true });
  const backing = path.join(dir, "backing.img");
  copySparse(a.file, backing);
  const ran = await withLoopDevice(backing, (device) =>
    body({
      label: "block device",
      dst: device,
      env,
      a,
      b,
      old: a.hash,
      journal: deviceJournal(device, env),
      reset() {
        stillOurs(device, backing);
        for (const p of stateJournals(env)) fs.rmSync(p, { force: true });
        writeDevice(device, a);
      },
      leftovers: () => stateJournals(env),
    }).then(() => true));
  return ran !== null;
}

const crashEnv = (spec: string) => ({ env: { SSYNC_TEST_CRASH: spec } });

/** Bytes a --json sync sent: DATA plus ZERO ranges. */
function sent(r: CliResult): number {
  const s = JSON.parse(r.stdout.trim().split("\n").pop()!);
  return s.dataBytesSent + s.zeroBytesSent;
}

function died(r: CliResult): string {
  if (r.signal === "SIGKILL") return "";
  return r.code === 0 ? "never reached: the run completed" : `never reached: exit ${r.code ?? r.signal}: ${lastLine(r)}`;
}

const syncB = (t: Target, env?: { env: Record<string, string> }) =>
  ssync(["sync", "--json", t.b.file, t.dst], t.env, env);

/** The last checks of every case: a rerun completes, DST is B, nothing left behind. */
async function rerunEndsIdentical(t: Target, problems: string[]): Promise<CliResult> {
  const again = await syncB(t);
  if (again.code !== 0) problems.push(`the rerun exited ${again.code ?? again.signal}: ${lastLine(again)}`);
  else problems.push(...checkIdentical(t.dst, t.b).map((p) => `after the rerun ${p}`));
  const stray = t.leftovers();
  if (stray.length > 0) problems.push(`after the rerun ${stray.map((p) => path.basename(p)).join(", ")} left behind`);
  return again;
}

/**
 * After a crash: recover, then check the image; or rerun, and check from what it sent
 * which image its open found (baseline: what an uninterrupted A → B sync sends).
 */
async function checkAfterCrash(
  t: Target,
  o: { expect: "old" | "new"; mode: "recover" | "rerun"; baseline: number },
): Promise<string[]> {
  const problems: string[] = [];
  const want: Found = o.expect === "new" ? "new" : t.old === null ? "absent" : "old";
  if (o.mode === "recover") {
    const rec = await ssync(["recover", t.dst], t.env);
    if (rec.code !== 0) problems.push(`recover exited ${rec.code ?? rec.signal}: ${lastLine(rec)}`);
    else if ((rec.stdout + rec.stderr).trim() === "") problems.push("recover printed nothing");
    const found = classify(t.dst, { old: t.old, new: t.b.hash });
    if (found !== want) problems.push(`after recover: ${found}, expected ${want}`);
    await rerunEndsIdentical(t, problems);
  } else {
    const again = await rerunEndsIdentical(t, problems);
    if (again.code === 0 && t.old !== null) {
      const n = sent(again);
      const expected = o.expect === "new" ? 0 : o.baseline;
      if (n !== expected) {
        problems.push(`the rerun sent ${n} B, expected ${expected} B (the rerun's open found ${n === 0 ? "the new image" : n === o.baseline ? "the old image" : "neither"}, not the ${o.expect} one)`);
      }
    }
  }
  return problems;
}

/**
 * The records of the journal an A → B sync leaves when it dies at `committed` (the complete,
 * committed journal): the last N of journal-write, apply and recover. null: no such journal.
 */
async function recordsOf(t: Target): Promise<number | null> {
  t.reset();
  if (died(await syncB(t, crashEnv("committed"))) !== "" || !fs.existsSync(t.journal)) return null;
  const fd = fs.openSync(t.journal, "r");
  try {
    const state = await readJournal(fd);
    if (!state.committed) return null;
    let n = 0;
    for await (const _ of state.records()) n++;
    return n;
  } finally {
    fs.closeSync(fd);
  }
}

/** `spec` (one past the last record) is not reached: the run completes and DST is B. */
async function notReached(t: Target, spec: string, run: () => Promise<CliResult>): Promise<string[]> {
  const r = await run();
  const problems: string[] = [];
  if (r.code !== 0) problems.push(`${spec}: expected to be passed by, the run exited ${r.code ?? r.signal}: ${lastLine(r)}`);
  const found = classify(t.dst, { old: t.old, new: t.b.hash });
  if (found !== "new") problems.push(`${spec}: expected to be passed by, then DST is ${found}, not new`);
  return problems.map((m) => `${t.label} ${m}`);
}

/** An uninterrupted A → B sync: what it sends (the rerun of a rolled-back crash sends it too). */
async function baselineOf(t: Target): Promise<number> {
  t.reset();
  const r = await syncB(t);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(checkIdentical(t.dst, t.b), []);
  const n = sent(r);
  assert.ok(n > 0, "A and B differ");
  return n;
}

type Mode = "recover" | "rerun";
const BOTH: readonly Mode[] = ["recover", "rerun"];

/**
 * The N of a counted point (1, 2, 5 and the last, at most the last), each with the checks
 * after it: both for the last; for the others recover and rerun in turn (every point gets
 * both, over its Ns; the check does not depend on N, the state it finds does).
 */
function counted(point: string, last: number | null): { spec: string; modes: readonly Mode[] }[] {
  const ns = [...new Set([...NS, ...(last === null ? [] : [last])])].filter((n) => last === null || n <= last);
  return ns.map((n, i) => ({
    spec: `${point}:${n}`,
    modes: n === last ? BOTH : i % 2 === 0 ? ["recover"] : ["rerun"],
  }));
}

/** What every run of `t`'s points starts from: the baseline, the journal's records, a problem if it had none. */
async function survey(t: Target): Promise<{ baseline: number; last: number | null; problems: string[] }> {
  const baseline = await baselineOf(t);
  const problems: string[] = [];
  const last = await recordsOf(t);
  if (last === null) problems.push(`${t.label}: a sync that died at committed left no committed journal at ${t.journal}`);
  return { baseline, last, problems };
}

/** One case: DST reset, a sync of B that must die at `spec`, then `mode` and the checks; its problems, labelled. */
async function crashCase(
  t: Target,
  o: { spec: string; expect: "old" | "new"; mode: Mode; baseline: number },
): Promise<string[]> {
  t.reset();
  const why = died(await syncB(t, crashEnv(o.spec)));
  const found = await checkAfterCrash(t, { expect: o.expect, mode: o.mode, baseline: o.baseline });
  return [...(why ? [why] : []), ...found].map((m) => `${t.label} ${o.spec}, then ${o.mode}: ${m}`);
}

function assertNoProblems(label: string, cases: number, problems: string[]): void {
  const summary = `${label}: ${cases} crash cases, ${problems.length} bad`;
  console.log(`crash-points ${summary}`);
  assert.deepEqual(problems, [], summary);
}

async function updatePoints(t: Target): Promise<void> {
  const { baseline, last, problems } = await survey(t);
  let cases = 0;
  for (const p of UPDATE_POINTS) {
    for (const { spec, modes } of p.counted ? counted(p.point, last) : [{ spec: p.point, modes: BOTH }]) {
      for (const mode of modes) {
        cases++;
        problems.push(...await crashCase(t, { spec, expect: p.image, mode, baseline }));
      }
    }
  }
  if (last !== null) {
    for (const point of ["journal-write", "apply"]) {
      cases++;
      t.reset();
      const spec = `${point}:${last + 1}`;
      problems.push(...await notReached(t, spec, () => syncB(t, crashEnv(spec))));
    }
  }
  assertNoProblems(`${t.label} update (${last} journal records)`, cases, problems);
}

async function recoverPoints(t: Target): Promise<void> {
  const { baseline, last, problems } = await survey(t);
  let cases = 0;
  const starts = [
    ...counted("recover", last).map((c) => ({ crash: "committed", recover: c.spec, modes: c.modes })),
    { crash: "apply:2", recover: "recover:1", modes: BOTH },
  ];
  for (const s of starts) {
    for (const mode of s.modes) {
      cases++;
      t.reset();
      const first = died(await syncB(t, crashEnv(s.crash)));
      const second = died(await ssync(["recover", t.dst], t.env, crashEnv(s.recover)));
      const found = await checkAfterCrash(t, { expect: "new", mode, baseline });
      const label = `${t.label} ${s.crash}, recover crashed at ${s.recover}, then ${mode}`;
      if (first) problems.push(`${label}: the sync: ${first}`);
      if (second) problems.push(`${label}: the recovery: ${second}`);
      problems.push(...found.map((m) => `${label}: ${m}`));
    }
  }
  if (last !== null) {
    cases++;
    t.reset();
    const spec = `recover:${last + 1}`;
    const crashed = died(await syncB(t, crashEnv("committed")));
    if (crashed) problems.push(`${t.label} committed: ${crashed}`);
    problems.push(...await notReached(t, spec, () => ssync(["recover", t.dst], t.env, crashEnv(spec))));
  }
  assertNoProblems(`${t.label} recovery (${last} journal records)`, cases, problems);
}

describe("crash points: after each, DST is exactly the old or the new image", () => {
  test("a file: every point of an update, N = 1, 2, 5, last; recover, or just rerun", T, async () => {
    await withTempDir((dir) => updatePoints(fileTarget(dir, { fresh: false })));
  });

  test("a file that grows: journal-synced (old), committed, apply:last, journal-removed (new), recovered", T, async () => {
    await withTempDir(async (dir) => {
      const t = fileTarget(dir, { fresh: false, grow: true });
      assert.ok(t.b.size > t.a.size);
      const baseline = await baselineOf(t);
      const last = await recordsOf(t);
      const problems: string[] = [];
      const points = [
        { spec: "journal-synced", image: "old" },
        { spec: "committed", image: "new" },
        { spec: `apply:${last}`, image: "new" },
        { spec: "journal-removed", image: "new" },
      ] as const;
      for (const p of points) {
        problems.push(...await crashCase(t, { spec: p.spec, expect: p.image, mode: "recover", baseline }));
      }
      assertNoProblems(`growing file (${last} journal records)`, points.length, problems);
    });
  });

  test("a new file: partial-write:N (N = 1, 2, 5), partial-synced, renamed; recover, or just rerun", T, async () => {
    await withTempDir(async (dir) => {
      const t = fileTarget(dir, { fresh: true });
      const problems: string[] = [];
      let cases = 0;
      for (const p of NEW_FILE_POINTS) {
        for (const { spec, modes } of p.counted ? counted(p.point, null) : [{ spec: p.point, modes: BOTH }]) {
          for (const mode of modes) {
            cases++;
            problems.push(...await crashCase(t, { spec, expect: p.image, mode, baseline: 0 }));
          }
        }
      }
      assertNoProblems("new file", cases, problems);
    });
  });

  test("a file: recovery crashed at recover:N (and after apply:2), then recovered again", T, async () => {
    await withTempDir((dir) => recoverPoints(fileTarget(dir, { fresh: false })));
  });

  const noLoop = loopDeviceUnavailableReason();
  for (const part of [{ name: "every point of an update", run: updatePoints }, { name: "recovery crashed at recover:N, then recovered again", run: recoverPoints }]) {
    test(`a loop block device: ${part.name}`, { ...T, skip: noLoop || false }, async (t) => {
      await withTempDir(async (dir) => {
        if (!(await withDeviceTarget(dir, part.run))) t.skip("losetup -f --show failed (no free loop device here?)");
      });
    });
  }
});

describe("crash points through a listener", () => {
  interface Net {
    dir: string;
    root: string;
    client: CliEnv;
    server: CliEnv;
  }

  async function withNet(body: (n: Net) => Promise<void>): Promise<void> {
    await withTempDir(async (dir) => body({ dir, ...(await networkEnvs(dir)) }));
  }

  const listen = (n: Net, env: Record<string, string> = {}): Promise<CliListener> =>
    startCliListener(["--root", n.root], { config: n.server.config, env: { ...n.server.env, ...env } });

  test("push: the listener dies at journal-synced (old) and at committed (new); restarted, it recovers before it listens", T, async () => {
    await withNet(async (n) => {
      const { a, b } = makeImagePair(n.dir, { scale: SCALE });
      const dst = path.join(n.root, "vm.img");
      const problems: string[] = [];
      for (const p of [{ point: "journal-synced", image: "old" }, { point: "committed", image: "new" }] as const) {
        copySparse(a.file, dst);
        const crashing = await listen(n, { SSYNC_TEST_CRASH: p.point });
        const push = await ssync(["push", "--accept-new", b.file, `127.0.0.1:${crashing.port}:vm.img`], n.client);
        await crashing.stop(); // reaps it (it should have killed itself)
        if (crashing.child.signalCode !== "SIGKILL") problems.push(`${p.point}: the listener did not die there (${crashing.child.exitCode})`);
        if (push.code !== 4) problems.push(`${p.point}: the push exited ${push.code}, not 4: ${lastLine(push)}`);
        const listener = await listen(n);
        try {
          const found = classify(dst, { old: a.hash, new: b.hash });
          if (found !== p.image) problems.push(`${p.point}: after the listener's restart ${found}, expected ${p.image}`);
          const said = p.image === "old" ? /rolled back an interrupted sync of \S*vm\.img/ : /completed an interrupted sync of \S*vm\.img/;
          if (!said.test(listener.stderr())) problems.push(`${p.point}: the restarted listener did not log ${said}: ${listener.stderr()}`);
          const again = await ssync(["push", "--accept-new", b.file, `127.0.0.1:${listener.port}:vm.img`], n.client);
          if (again.code !== 0) problems.push(`${p.point}: the rerun exited ${again.code}: ${lastLine(again)}`);
          problems.push(...checkIdentical(dst, b).map((m) => `${p.point}: after the rerun ${m}`));
          const stray = leftovers(n.root);
          if (stray.length > 0) problems.push(`${p.point}: ${stray.join(", ")} left behind`);
        } finally {
          await listener.stop();
        }
      }
      assertNoProblems("push through a listener", 2, problems);
    });
  });

  test("push to a block-device export: the listener dies at journal-synced (old), committed and apply:2 (new); its journal is in its state folder; a restart or ssync recover DEVICE recovers it", { ...T, skip: loopDeviceUnavailableReason() || false }, async (t) => {
    await withNet(async (n) => {
      const { a, b } = makeImagePair(n.dir, { scale: SCALE, sameSize: true });
      const backing = path.join(n.dir, "backing.img");
      copySparse(a.file, backing);
      const problems: string[] = [];
      const ran = await withLoopDevice(backing, async (device) => {
        const points = [
          { point: "journal-synced", image: "old", via: "restart" },
          { point: "committed", image: "new", via: "recover" },
          { point: "apply:2", image: "new", via: "restart" },
        ] as const;
        for (const p of points) {
          stillOurs(device, backing);
          writeDevice(device, a);
          const args = ["--root", n.root, "--export", `disk=${device}`];
          const crashing = await startCliListener(args, { config: n.server.config, env: { ...n.server.env, SSYNC_TEST_CRASH: p.point } });
          const push = await ssync(["push", "--accept-new", b.file, `127.0.0.1:${crashing.port}:disk`], n.client);
          await crashing.stop();
          if (crashing.child.signalCode !== "SIGKILL") problems.push(`${p.point}: the listener did not die there (${crashing.child.exitCode})`);
          if (push.code !== 4) problems.push(`${p.point}: the push exited ${push.code}, not 4: ${lastLine(push)}`);
          const journal = deviceJournal(device, n.server);
          if (!fs.existsSync(journal)) problems.push(`${p.point}: no journal at ${journal}`);
          if (p.via === "recover") {
            const rec = await ssync(["recover", device], n.server);
            if (rec.code !== 0) problems.push(`${p.point}: recover exited ${rec.code}: ${lastLine(rec)}`);
          }
          const listener = await startCliListener(args, n.server);
          try {
            const found = classify(device, { old: a.hash, new: b.hash });
            if (found !== p.image) problems.push(`${p.point}: after ${p.via === "recover" ? "ssync recover" : "the listener's restart"} ${found}, expected ${p.image}`);
            const again = await ssync(["push", "--accept-new", b.file, `127.0.0.1:${listener.port}:disk`], n.client);
            if (again.code !== 0) problems.push(`${p.point}: the rerun exited ${again.code}: ${lastLine(again)}`);
            problems.push(...checkIdentical(device, b).map((m) => `${p.point}: after the rerun ${m}`));
            if (stateJournals(n.server).length > 0) problems.push(`${p.point}: ${stateJournals(n.server).join(", ")} left behind`);
          } finally {
            await listener.stop();
          }
        }
        return true;
      });
      if (ran === null) return t.skip("losetup -f --show failed (no free loop device here?)");
      assertNoProblems("push to a block-device export", 3, problems);
    });
  });

  test("pull: the client dies at committed (update: new) and at renamed (new file: new)", T, async () => {
    await withNet(async (n) => {
      const { a, b } = makeImagePair(n.dir, { scale: SCALE });
      copySparse(b.file, path.join(n.root, "vm.img"));
      const out = path.join(n.dir, "out");
      fs.mkdirSync(out);
      const problems: string[] = [];
      const listener = await listen(n);
      try {
        const remote = `127.0.0.1:${listener.port}:vm.img`;
        for (const p of [{ point: "committed", fresh: false }, { point: "renamed", fresh: true }]) {
          const local = path.join(out, p.fresh ? "new.img" : "vm.img");
          if (!p.fresh) copySparse(a.file, local);
          const pull = await ssync(["pull", "--accept-new", remote, local], n.client, crashEnv(p.point));
          if (pull.signal !== "SIGKILL") problems.push(`${p.point}: the pull did not die there (${pull.code}: ${lastLine(pull)})`);
          const rec = await ssync(["recover", local], n.client);
          if (rec.code !== 0) problems.push(`${p.point}: recover exited ${rec.code}: ${lastLine(rec)}`);
          const found = classify(local, { old: p.fresh ? null : a.hash, new: b.hash });
          if (found !== "new") problems.push(`${p.point}: after recover ${found}, expected new`);
          const again = await ssync(["pull", remote, local], n.client);
          if (again.code !== 0) problems.push(`${p.point}: the rerun exited ${again.code}: ${lastLine(again)}`);
          problems.push(...checkIdentical(local, b).map((m) => `${p.point}: after the rerun ${m}`));
          const stray = leftovers(out);
          if (stray.length > 0) problems.push(`${p.point}: ${stray.join(", ")} left behind`);
        }
      } finally {
        await listener.stop();
      }
      assertNoProblems("pull", 2, problems);
    });
  });
});
