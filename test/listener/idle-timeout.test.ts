/**
 * The listener's idle timeout closes sessions whose peer is silent, but not while the server
 * itself is working on a request the peer waits for (an fsync longer than the timeout), and
 * not only when a peer keeps it alive with records that do nothing: a record the session
 * calls no activity (activity.ignoreLastRecord(), a dry run's FLUSH) does not reset the clock.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { IdleTimeoutChannel } from "../../src/net/idle-timeout-channel.ts";
import { runClient } from "../../src/session/client-session.ts";
import { memoryPair } from "../../src/session/memory-pair.ts";
import { serveSession } from "../../src/session/server-session.ts";
import { openDestination } from "../../src/storage/open-destination.ts";
import { openSource } from "../../src/storage/open-source.ts";
import type { Storage } from "../../src/storage/storage.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { encode } from "../../protocol/codec.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { authorize, startListener, waitFor } from "../helpers/network.ts";
import { nextMessage, openMessage, rawConnect } from "../helpers/raw-client.ts";

/** The same store, but sync() takes `ms` longer. */
function slowSync(store: Storage, ms: number): Storage {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === "sync") return async () => (await sleep(ms), target.sync());
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

for (const spared of [true, false]) {
  test(`an fsync longer than the idle timeout ${spared ? "does not" : "would"} end the session`, { timeout: 30_000 }, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 8 << 20, chunks: [{ offset: 1 << 20, length: 2 << 20 }] });
      const pool = new WorkerPool({ size: 1 });
      const [clientEnd, serverEnd] = memoryPair();
      const idle = new IdleTimeoutChannel(serverEnd, { timeoutMs: 300 });
      const server = serveSession(idle, {
        pool,
        activity: spared ? idle.activity : undefined,
        open: async () => slowSync(await openDestination(dst, { create: true }), 1000),
      });
      const source = await openSource(src);
      try {
        const run = runClient(clientEnd, source, { mode: "push", name: "dst", blockSize: 65536, hash: "xxh128", dryRun: false, pool });
        if (spared) {
          await run;
          assert.equal(fileHash(dst), fileHash(src));
        } else {
          await assert.rejects(run, /idle timeout|closed/);
        }
      } finally {
        await server;
        await source[Symbol.asyncDispose]();
        await pool[Symbol.asyncDispose]();
      }
    });
  });
}

/**
 * A peer sends one record every `everyMs` over a memory pair; the server end receives them
 * under an idle timeout of `timeoutMs`, calling `ignoreLastRecord()` after each when `ignore`.
 * Resolves with the records received before the timeout closed the channel (or `max`).
 */
async function recordsBeforeTimeout(o: { timeoutMs: number; everyMs: number; ignore: boolean; max: number }): Promise<number> {
  const [peer, inner] = memoryPair();
  const idle = new IdleTimeoutChannel(inner, { timeoutMs: o.timeoutMs });
  let sending = true;
  const sender = (async () => {
    for (let i = 0; i < o.max + 1 && sending; i++) {
      await sleep(o.everyMs);
      await peer.send(new Uint8Array([i & 0xff])).catch(() => (sending = false));
    }
  })();
  let received = 0;
  try {
    while (received < o.max) {
      const record = await idle.receive();
      if (record === null) break;
      received++;
      if (o.ignore) idle.activity.ignoreLastRecord();
    }
  } catch {
    // The idle timeout closed the channel.
  } finally {
    sending = false;
    idle.close();
    await sender;
  }
  return received;
}

test("records the session calls no activity (ignoreLastRecord) do not reset the idle clock", { timeout: 30_000 }, async () => {
  // A record every 20 % of the timeout: counted, the channel lives for all 20 of them;
  // ignored, the timeout still closes it after about 5.
  assert.equal(await recordsBeforeTimeout({ timeoutMs: 400, everyMs: 80, ignore: false, max: 20 }), 20);
  const ignored = await recordsBeforeTimeout({ timeoutMs: 400, everyMs: 80, ignore: true, max: 20 });
  assert.ok(ignored >= 3 && ignored <= 6, `${ignored} records before the idle timeout`);
});

test("ignoreLastRecord also holds when called after the next receive began waiting", { timeout: 30_000 }, async () => {
  const [peer, inner] = memoryPair();
  const idle = new IdleTimeoutChannel(inner, { timeoutMs: 400 });
  const first = idle.receive(); // the idle period begins now
  await sleep(300);
  await peer.send(new Uint8Array([1]));
  assert.deepEqual(await first, new Uint8Array([1]));
  const next = idle.receive();
  // The record that came at ~300 ms is called no activity only now: the deadline goes back
  // to ~400 ms, not 400 ms from now.
  idle.activity.ignoreLastRecord();
  const started = Date.now();
  await assert.rejects(next, /idle timeout/);
  assert.ok(Date.now() - started < 300, "the deadline counted from where the idle period began");
  await peer[Symbol.asyncDispose]();
});

test("at the listener, a dry run kept alive only with FLUSH every 20 % of the idle timeout is closed by it", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const pool = new WorkerPool({ size: 1 });
    const idleTimeoutMs = 1000;
    const server = await startListener(dir, { pool, idleTimeoutMs });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key, { options: "read-only" });
      makeSparseFile(path.join(server.root, "t.img"), { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
      const conn = await rawConnect(server, key, dir);
      try {
        await conn.channel.send(encode(openMessage({ mode: "push", name: "t.img", size: 1 << 20, dryRun: true })));
        assert.equal((await nextMessage(conn))?.type, "OPEN_OK");
        let acks = 0;
        // Bounded: 50 FLUSHes would keep it 10 idle timeouts long if each reset the clock.
        for (let cookie = 2; cookie < 52; cookie++) {
          await sleep(idleTimeoutMs / 5);
          const sent = await conn.channel.send(encode({ type: "FLUSH", cookie })).then(() => true, () => false);
          const reply = sent ? await nextMessage(conn) : null;
          if (reply === null) break;
          assert.equal(reply.type, "ACK");
          acks++;
        }
        assert.ok(acks <= 8, `${acks} FLUSHes answered: the idle timeout did not close the session`);
        await waitFor(() => server.logs.some((l) => /idle timeout/.test(l)), { timeoutMs: 5000, what: "the idle timeout in the log" });
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    } finally {
      await server.listener.close();
      await pool[Symbol.asyncDispose]();
    }
  });
});
