/**
 * Soak: a real `ssync listen` process serves honest pushes and pulls of a changing sparse
 * image in a loop while attackers, from several 127.0.0.x addresses and with a read-only key,
 * do at once what once crashed, exhausted or starved a listener (issue 7, "Why" 1–4):
 * 1. a dry-run push that fills the task slots with SIGS, then closes a range never opened;
 * 2. pulls that ask for the same 8 MiB of incompressible data again and again, then stop
 *    reading;
 * 3. idle TCP connections from 16 addresses that never finish a handshake, reopened as they
 *    are cut;
 * 4. dry-run pushes kept open with a FLUSH now and then.
 * The honest client dials from 127.0.0.1, the attackers from 127.0.0.2–28 (a per-address
 * cap cannot tell two parties on one address apart). Every honest sync must complete and be identical, the listener must stay alive, and its
 * RSS (VmRSS from /proc) must stay under SOAK_RSS_LIMIT.
 *
 * Bounded: SSYNC_SOAK_SECONDS (default 30) of load, every attacker loop stops with it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { connect, type Socket } from "node:net";
import path from "node:path";
import { encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import type { KeyPair } from "../../src/noise/x25519.ts";
import { fileHash, makeSparseFile, patternBytes, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, makeKey, startCliListener } from "../helpers/network.ts";
import { nextMessage, openMessage, rawConnect } from "../helpers/raw-client.ts";

const SECONDS = Number(process.env.SSYNC_SOAK_SECONDS ?? 30);
/** The listener's budget (ListenerOptions.memoryBudgetBytes, 512 MiB) plus the runtime itself. */
const SOAK_RSS_LIMIT = 900 << 20;
const MiB = 1 << 20;
const BLOCK = 4096;

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
  return kib * 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `round` again and again until `until` passes; errors are the attack failing, as expected. */
async function loop(until: number, round: () => Promise<boolean>, counter: { rounds: number; opened: number }): Promise<void> {
  while (Date.now() < until) {
    if (await round().catch(() => false)) counter.opened++;
    counter.rounds++;
  }
}

/** Each attack resolves true once the listener opened its session (OPEN_OK): the attack got in. */
async function crashAttempt(server: { listener: { port: number } }, key: KeyPair, dir: string, from: string): Promise<boolean> {
  const conn = await rawConnect(server, key, dir, undefined, { localAddress: from });
  try {
    await conn.channel.send(encode(openMessage({ mode: "push", name: "victim.img", size: 16 * MiB, dryRun: true })));
    if ((await nextMessage(conn))?.type !== "OPEN_OK") return false;
    let cookie = 2;
    for (let i = 0; i < 70; i++) {
      conn.channel.send(encode({ type: "SIGS", cookie: cookie++, offset: i * 64 * BLOCK, length: 64 * BLOCK })).catch(() => {});
    }
    await conn.channel.send(encode({ type: "RANGE_DONE", cookie: cookie++, offset: 15 * MiB, length: 64 * BLOCK }));
    await conn.channel.send(encode({ type: "RANGE_DONE", cookie: cookie++, offset: 15 * MiB, length: 64 * BLOCK }));
    while ((await nextMessage(conn)) !== null);
    return true;
  } finally {
    await conn[Symbol.asyncDispose]().catch(() => {});
  }
}

async function memoryAttempt(server: { listener: { port: number } }, key: KeyPair, dir: string, until: number, from: string): Promise<boolean> {
  const conn = await rawConnect(server, key, dir, undefined, { localAddress: from });
  try {
    await conn.channel.send(encode(openMessage({ mode: "pull", name: "random.img", size: 0, dryRun: false })));
    if ((await nextMessage(conn))?.type !== "OPEN_OK") return false;
    const blocks = (8 * MiB) / BLOCK;
    const digests = new Uint8Array(blocks * DIGEST_SIZE).fill(0x5a); // never the source's: all of it differs
    for (let cookie = 2; cookie < 66; cookie++) {
      conn.channel.send(encode({ type: "READ_DIFF", cookie, offset: 0, length: 8 * MiB, digests })).catch(() => {});
    }
    // Read nothing: the listener must hold its memory and end the session by itself.
    await sleep(Math.min(3000, Math.max(0, until - Date.now())));
    return true;
  } finally {
    conn.channel.close(new Error("attacker leaves"));
  }
}

async function idleHandshakes(port: number, until: number): Promise<void> {
  const sockets = new Set<Socket>();
  const open = (address: string) => {
    if (Date.now() >= until) return;
    const s = connect({ port, host: "127.0.0.1", localAddress: address });
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => {
      sockets.delete(s);
      setTimeout(() => open(address), 50);
    });
  };
  for (let a = 2; a < 18; a++) for (let i = 0; i < 4; i++) open(`127.0.0.${a}`);
  await sleep(Math.max(0, until - Date.now()));
  for (const s of sockets) s.destroy();
}

async function slotHolder(server: { listener: { port: number } }, key: KeyPair, dir: string, until: number, from: string): Promise<boolean> {
  const conn = await rawConnect(server, key, dir, undefined, { localAddress: from });
  try {
    await conn.channel.send(encode(openMessage({ mode: "push", name: "victim.img", size: 16 * MiB, dryRun: true })));
    if ((await nextMessage(conn))?.type !== "OPEN_OK") return false;
    for (let cookie = 2; Date.now() < until; cookie++) {
      await conn.channel.send(encode({ type: "FLUSH", cookie }));
      if ((await nextMessage(conn))?.type !== "ACK") break;
      await sleep(1000);
    }
    return true;
  } finally {
    await conn[Symbol.asyncDispose]().catch(() => {});
  }
}

test(`soak: honest syncs stay exact while attackers hammer the listener (${SECONDS} s)`, { timeout: (SECONDS + 90) * 1000 }, async () => {
  await withTempDir(async (dir) => {
    const config = path.join(dir, "config");
    const root = path.join(dir, "root");
    fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
    fs.mkdirSync(root);
    makeSparseFile(path.join(root, "victim.img"), { size: 16 * MiB, chunks: [{ offset: 0, length: 16 * MiB }] });
    makeSparseFile(path.join(root, "random.img"), { size: 8 * MiB, chunks: [{ offset: 0, length: 8 * MiB, fill: "random" }] });
    const honest = await makeKey(path.join(dir, "honest_key"));
    // Read-only keys, one per kind of attack, so that the per-key session cap lets each in.
    const attackers = [await makeKey(path.join(dir, "crash_key")), await makeKey(path.join(dir, "memory_key")), await makeKey(path.join(dir, "holder_key"))];
    const keys = path.join(config, "ssync", "authorized_keys");
    authorize(keys, honest);
    for (const key of attackers) authorize(keys, key, { options: "read-only" });
    const listener = await startCliListener(["--root", root], { config });
    const pool = new WorkerPool({ size: 2 });
    const server = { listener: { port: listener.port, address: `127.0.0.1:${listener.port}` } };
    const until = Date.now() + SECONDS * 1000;
    let maxRss = 0;
    const sampler = setInterval(() => {
      if (listener.child.pid !== undefined && listener.child.exitCode === null) maxRss = Math.max(maxRss, rssOf(listener.child.pid));
    }, 200);
    const stats = {
      crash: { rounds: 0, opened: 0 },
      memory: { rounds: 0, opened: 0 },
      holders: { rounds: 0, opened: 0 },
      honest: { rounds: 0 },
    };
    try {
      const attacks = [
        loop(until, () => crashAttempt(server, attackers[0], dir, "127.0.0.20"), stats.crash),
        ...[21, 22, 23, 24].map((a) => loop(until, () => memoryAttempt(server, attackers[1], dir, until, `127.0.0.${a}`), stats.memory)),
        idleHandshakes(listener.port, until),
        ...[25, 26, 27, 28].map((a) => loop(until, () => slotHolder(server, attackers[2], dir, until, `127.0.0.${a}`), stats.holders)),
      ];
      const source = path.join(dir, "source.img");
      const pulled = path.join(dir, "pulled.img");
      makeSparseFile(source, { size: 64 * MiB, chunks: [{ offset: 0, length: 4 * MiB }, { offset: 40 * MiB, length: 2 * MiB }] });
      const knownHosts = path.join(dir, "known_hosts");
      for (let round = 0; Date.now() < until; round++) {
        // Change a few blocks (and now and then the size) of the source, push, pull back, compare.
        const fd = fs.openSync(source, "r+");
        fs.writeSync(fd, patternBytes(3 * BLOCK, { seed: round + 7 }), 0, 3 * BLOCK, ((round * 977) % 60) * MiB);
        if (round % 5 === 4) fs.ftruncateSync(fd, (64 + (round % 3)) * MiB + 123);
        fs.closeSync(fd);
        await clientSync(server, { mode: "push", local: source, name: "honest.img", key: honest, pool, knownHosts });
        await clientSync(server, { mode: "pull", local: pulled, name: "honest.img", key: honest, pool, knownHosts });
        assert.equal(fileHash(pulled), fileHash(source), `round ${round}: the pulled copy differs`);
        assert.equal(fileHash(path.join(root, "honest.img")), fileHash(source), `round ${round}: the listener's copy differs`);
        stats.honest.rounds++;
      }
      await Promise.all(attacks);
      assert.equal(listener.child.exitCode, null, `the listener died: ${listener.stderr().slice(-2000)}`);
      assert.ok(stats.honest.rounds >= 3, `honest rounds: ${JSON.stringify(stats)}`);
      for (const kind of ["crash", "memory", "holders"] as const) {
        assert.ok(stats[kind].opened > 0, `the ${kind} attack never got a session: ${JSON.stringify(stats)}`);
      }
      assert.ok(maxRss > 0 && maxRss < SOAK_RSS_LIMIT, `listener RSS peaked at ${maxRss >> 20} MiB`);
      assert.doesNotMatch(listener.stderr(), /unhandled|uncaught/i, "the listener's safety net was needed");
      console.log(`soak: ${JSON.stringify(stats)}, listener RSS peak ${maxRss >> 20} MiB`);
    } finally {
      clearInterval(sampler);
      await pool[Symbol.asyncDispose]();
      await listener.stop();
    }
  });
});
