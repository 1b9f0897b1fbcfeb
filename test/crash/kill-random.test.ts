/**
 * `kill -9` at random moments (issue 8, acceptance 2): of a push client, of the listener,
 * of a local `ssync sync`. Pushes alternate two different sources (A, B: other sizes, data,
 * holes) onto one destination name, where writing in place leaves neither image; a few
 * rounds of each kind create a new file instead.
 *
 * Each round: start the sync; SIGKILL the victim after a delay drawn uniformly from
 * [0, T), T the duration of the same kind of sync measured once at the start; then do what
 * the user does next and check:
 * 1. recover as the user would, then DST is byte-identical (sha256) to the complete image
 *    before the sync or the one it was syncing to (a new file: absent or the new image):
 *    - a killed client or local sync: `ssync recover DST` (exit 0), what the next sync's open
 *      does first. A client killed while the listener lives: the listener's session end is
 *      awaited first (no connection left on its port), as a rerun would wait for its lock;
 *    - a killed listener: restart it, which completes or rolls back every interrupted sync
 *      under its root before it listens (storage/recover-tree.ts), then hash its file. That
 *      is what its user does next, and every client then finds the file whole; in every
 *      other round `ssync recover` on its path (with its state folder) is run instead, so
 *      both ways are checked.
 * 2. a rerun exits 0 and makes DST identical to its source, allocating at most the
 *    source's blocks + one block, and leaves no journal or partial file behind.
 * Every round is checked; the test fails at the end listing each bad round, with a tally of
 * what was found (old / new / absent / neither) and of the raw file before recover.
 *
 * SSYNC_KILL_ROUNDS=K multiplies the rounds (default 1: 6 + 1 new-file push-client kills,
 * 6 + 1 listener kills, 4 + 1 local-sync kills; K = 5 gives the 30 / 30 / 20).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { type CliListener, type CliResult, finished, startCliListener } from "../helpers/network.ts";
import { withTempDir } from "../helpers/sparse.ts";
import { workFileBeside } from "../../src/storage/work-files.ts";
import {
  checkIdentical,
  classify,
  cliEnv,
  type CliEnv,
  type Found,
  type Image,
  killHard,
  lastLine,
  leftovers,
  makeImagePair,
  networkEnvs,
  oldOrNew,
  sleep,
  spawnSsync,
  ssync,
} from "../helpers/crash-images.ts";

function roundsFactor(): number {
  const text = process.env.SSYNC_KILL_ROUNDS ?? "1";
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 100) {
    throw new Error(`Cannot run the kill tests: SSYNC_KILL_ROUNDS=${text} is not a whole number from 1 to 100`);
  }
  return n;
}
const K = roundsFactor();
/** Per kind: a bound on one round (kill, recover, rerun, restart) and set-up. */
const timeout = (rounds: number) => ({ timeout: 30_000 + rounds * 12_000 });

interface RoundLog {
  round: string;
  update: boolean;
  found: Found;
  raw: Found;
  problems: string[];
}

interface Round {
  label: string;
  /** The sync to interrupt. */
  start: () => ChildProcess;
  /** The process to kill: the sync itself, or the listener serving it. */
  victim: (sync: ChildProcess) => ChildProcess;
  delayMs: number;
  dst: string;
  src: Image;
  /** Hash of DST before the sync; null: it did not exist. */
  old: string | null;
  /** After the kill, once the sync process has exited: what must end before the check. */
  settle: () => Promise<void>;
  /** What the user does next to make DST whole: null, or what went wrong. */
  recover: () => Promise<string | null>;
  /** After the check, before the rerun (restart the listener). */
  beforeRerun?: () => Promise<void>;
  rerun: () => Promise<CliResult>;
}

function outcomeOf(r: CliResult, killedSync: boolean): string {
  if (r.code === 0) return "finished before the kill";
  if (r.signal === "SIGKILL" && killedSync) return "killed";
  return `exit ${r.code ?? r.signal}: ${lastLine(r)}`;
}

/**
 * `ssync recover` of a name where nothing exists, neither the file nor its partial file (a
 * new-file sync killed before it made one), refuses with "no such file" (exit 1): the name
 * is then as it was before the sync (absent), which is all this test asks of recover.
 */
function nothingThere(dst: string, rec: CliResult): boolean {
  return !fs.existsSync(dst) && !fs.existsSync(workFileBeside(dst, "partial")) && /: no such file/.test(rec.stderr);
}

/** `ssync recover DST` as `who`: null, or why it failed. */
async function recoverCli(dst: string, who: CliEnv): Promise<string | null> {
  const rec = await ssync(["recover", dst], who);
  return rec.code === 0 || nothingThere(dst, rec) ? null : `recover exited ${rec.code ?? rec.signal}: ${lastLine(rec)}`;
}

async function killRound(o: Round): Promise<RoundLog> {
  const problems: string[] = [];
  const sync = o.start();
  const done = finished(sync, 60_000);
  const victim = o.victim(sync);
  await Promise.race([sleep(o.delayMs), done]);
  killHard(victim);
  const ended = await done;
  await o.settle();
  const expected = { old: o.old, new: o.src.hash };
  const raw = classify(o.dst, expected);
  const wrong = await o.recover();
  if (wrong !== null) problems.push(wrong);
  const found = classify(o.dst, expected);
  if (!oldOrNew(found, expected)) {
    problems.push(`after recover ${path.basename(o.dst)} is ${found === "absent" ? "missing" : "neither the old nor the new image"}`);
  }
  await o.beforeRerun?.();
  let again = await o.rerun();
  if (again.code !== 0) problems.push(`the rerun exited ${again.code ?? again.signal}: ${lastLine(again)}`);
  const after = checkIdentical(o.dst, o.src);
  problems.push(...after.map((p) => `after the rerun ${p}`));
  const stray = leftovers(path.dirname(o.dst));
  if (stray.length > 0) problems.push(`after the rerun ${stray.join(", ")} left behind`);
  if (again.code !== 0 || after.length > 0) {
    // Later rounds need a known image: one more rerun, or the test cannot go on.
    again = await o.rerun();
    if (again.code !== 0 || checkIdentical(o.dst, o.src).length > 0) {
      throw new Error(`${o.label}: two reruns did not make ${o.dst} identical: ${lastLine(again)}; ${problems.join("; ")}`);
    }
  }
  const round = `${o.label} (${outcomeOf(ended, victim === sync)} at ${o.delayMs.toFixed(0)} ms)`;
  return { round, update: o.old !== null, found, raw, problems };
}

function tally(logs: RoundLog[], key: "found" | "raw"): string {
  const part = (update: boolean) => {
    const counts = new Map<Found, number>();
    for (const l of logs) if (l.update === update) counts.set(l[key], (counts.get(l[key]) ?? 0) + 1);
    return [...counts].sort().map(([k, n]) => `${k} ${n}`).join(" ");
  };
  return `updates ${part(true)}, new files ${part(false)}`;
}

function report(kind: string, logs: RoundLog[], durations: string): void {
  const bad = logs.filter((l) => l.problems.length > 0);
  const summary = `${kind}: ${logs.length} rounds (SSYNC_KILL_ROUNDS=${K}; ${durations}); ` +
    `after recover: ${tally(logs, "found")}; raw before recover: ${tally(logs, "raw")}; bad rounds: ${bad.length}`;
  console.log(`kill-random ${summary}`);
  assert.deepEqual(
    bad.map((l) => `${l.round}: ${l.problems.join("; ")}`),
    [],
    summary,
  );
}

/** Timed run that must succeed: the measured T of its kind. */
async function timed(run: () => Promise<CliResult>, what: string): Promise<number> {
  const t0 = performance.now();
  const r = await run();
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
  return performance.now() - t0;
}

/** Rounds alternating A and B onto `name`, then `fresh` rounds each onto a new name. */
function plan(o: { updates: number; fresh: number }): { update: boolean; index: number }[] {
  return [
    ...Array.from({ length: o.updates }, (_, index) => ({ update: true, index })),
    ...Array.from({ length: o.fresh }, (_, index) => ({ update: false, index })),
  ];
}

interface Network {
  dir: string;
  root: string;
  client: CliEnv;
  server: CliEnv;
  listener: CliListener;
  images: { a: Image; b: Image };
}

async function withNetwork(body: (n: Network) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const { root, client, server } = await networkEnvs(dir);
    const images = makeImagePair(dir);
    const n: Network = {
      dir,
      root,
      client,
      server,
      listener: await startCliListener(["--root", root], server),
      images,
    };
    try {
      await body(n);
    } finally {
      await n.listener.stop();
    }
  });
}

/**
 * Whether the listener on 127.0.0.1:`port` still holds a connection (ESTABLISHED, CLOSE_WAIT
 * or SYN_RECV on its port, from /proc/net/tcp). None: every session it served has ended and
 * let go of its file (a session disposes its store before its connection). Sockets the
 * listener has closed (FIN_WAIT, TIME_WAIT, LAST_ACK) belong to no process and do not count.
 */
function listenerBusy(port: number): boolean {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const line of fs.readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 3 && f[1].endsWith(`:${hexPort}`) && ["01", "03", "08"].includes(f[3])) return true;
  }
  return false;
}

/** The listener's session for a killed client has ended, as a rerun would wait for its lock. */
async function sessionEnded(listener: CliListener): Promise<void> {
  const end = Date.now() + 10_000;
  while (listenerBusy(listener.port)) {
    if (Date.now() > end) throw new Error(`the listener still serves the killed client after 10 s: ${listener.stderr()}`);
    await sleep(5);
  }
}

const push = (n: Network, src: Image, name: string) =>
  spawnSsync(["push", "--accept-new", src.file, `127.0.0.1:${n.listener.port}:${name}`], n.client);

describe("kill -9 at random moments: the destination is the old or the new image", () => {
  for (const victim of ["push client", "listener"] as const) {
    const updates = 6 * K;
    const fresh = K;
    test(`${victim} killed ${updates} times pushing A and B in turn onto one name, ${fresh} creating a new file`, timeout(updates + fresh), async () => {
      await withNetwork(async (n) => {
        const { a, b } = n.images;
        const dst = path.join(n.root, "vm.img");
        const run = (src: Image, name: string) => finished(push(n, src, name), 60_000);
        const tNew = await timed(() => run(a, "vm.img"), "the first push");
        const tUpdate = await timed(() => run(b, "vm.img"), "the update push");
        let current = b;
        const logs: RoundLog[] = [];
        for (const { update, index } of plan({ updates, fresh })) {
          const src = update ? (current === a ? b : a) : index % 2 ? b : a;
          const name = update ? "vm.img" : `new-${index}.img`;
          const target = update ? dst : path.join(n.root, name);
          logs.push(
            await killRound({
              label: `${update ? "update" : "new file"} ${index + 1}: push ${path.basename(src.file)}`,
              start: () => push(n, src, name),
              victim: (sync) => (victim === "listener" ? n.listener.child : sync),
              delayMs: Math.random() * (update ? tUpdate : tNew),
              dst: target,
              src,
              old: update ? current.hash : null,
              settle: async () => {
                if (victim === "listener") await n.listener.stop(); // already dead: reaps it
                else await sessionEnded(n.listener);
              },
              recover: async () => {
                if (victim === "listener" && index % 2 === 0) {
                  n.listener = await startCliListener(["--root", n.root], n.server); // recovers, then listens
                  return null;
                }
                return await recoverCli(target, n.server);
              },
              beforeRerun: async () => {
                if (victim === "listener" && index % 2 === 1) n.listener = await startCliListener(["--root", n.root], n.server);
              },
              rerun: () => run(src, name),
            }),
          );
          if (update) current = src;
          else fs.rmSync(target, { force: true });
        }
        report(`${victim} kills`, logs, `T ${tUpdate.toFixed(0)} ms per update, ${tNew.toFixed(0)} ms per new file`);
      });
    });
  }

  const updates = 4 * K;
  const fresh = K;
  test(`local ssync sync killed ${updates} times syncing A and B in turn onto one file, ${fresh} creating a new file`, timeout(updates + fresh), async () => {
    await withTempDir(async (dir) => {
      const local = cliEnv(dir, "local");
      const { a, b } = makeImagePair(dir);
      const out = path.join(dir, "out");
      fs.mkdirSync(out);
      const dst = path.join(out, "vm.img");
      const sync = (src: Image, to: string) => spawnSsync(["sync", src.file, to], local);
      const run = (src: Image, to: string) => finished(sync(src, to), 60_000);
      const tNew = await timed(() => run(a, dst), "the first sync");
      const tUpdate = await timed(() => run(b, dst), "the update sync");
      let current = b;
      const logs: RoundLog[] = [];
      for (const { update, index } of plan({ updates, fresh })) {
        const src = update ? (current === a ? b : a) : index % 2 ? b : a;
        const target = update ? dst : path.join(out, `new-${index}.img`);
        logs.push(
          await killRound({
            label: `${update ? "update" : "new file"} ${index + 1}: sync ${path.basename(src.file)}`,
            start: () => sync(src, target),
            victim: (child) => child,
            delayMs: Math.random() * (update ? tUpdate : tNew),
            dst: target,
            src,
            old: update ? current.hash : null,
            settle: async () => {},
            recover: () => recoverCli(target, local),
            rerun: () => run(src, target),
          }),
        );
        if (update) current = src;
        else fs.rmSync(target, { force: true });
      }
      report("local sync kills", logs, `T ${tUpdate.toFixed(0)} ms per update, ${tNew.toFixed(0)} ms per new file`);
    });
  });
});
