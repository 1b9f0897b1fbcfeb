/**
 * The listener's idle timeout closes sessions whose peer is silent, but not while the server
 * itself is working on a request the peer waits for (an fsync longer than the timeout).
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
