/**
 * `ssync sync` never compresses (issue 9, scope 3): its pair is memory, so zstd would only cost
 * CPU. The same compressible data pushed through a session does go compressed, so the check
 * can fail.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { runClient } from "../src/session/client-session.ts";
import { syncLocal } from "../src/session/local-sync.ts";
import { memoryPair } from "../src/session/memory-pair.ts";
import { serveSession } from "../src/session/server-session.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { openSource } from "../src/storage/open-source.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1 << 20;

test("a local sync sends no compressed DATA; a push of the same data does", { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const src = path.join(dir, "src.img");
    // A byte pattern: zstd shrinks it to almost nothing.
    makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 8 * MiB, fill: 0x5a }] });
    await using pool = new WorkerPool();
    const options = { blockSize: 65536, hash: "poly1305" as const, dryRun: false, pool };
    const local = await syncLocal(src, path.join(dir, "local.img"), options);
    assert.equal(local.local.bytesSent, 8 * MiB);
    assert.equal(local.local.dataBytesOnWire, local.local.bytesSent, "raw DATA only");
    assert.equal(fileHash(path.join(dir, "local.img")), fileHash(src));

    const pushed = path.join(dir, "pushed.img");
    await using source = await openSource(src);
    const [clientEnd, serverEnd] = memoryPair();
    const server = serveSession(serverEnd, { pool, open: (req) => openDestination(pushed, { create: true, readOnly: req.dryRun }) });
    const push = await runClient(clientEnd, source, { ...options, mode: "push", name: pushed });
    await server;
    assert.ok(push.local.dataBytesOnWire < push.local.bytesSent / 8, `a push compresses: ${push.local.dataBytesOnWire} of ${push.local.bytesSent}`);
    assert.equal(fileHash(pushed), fileHash(src));
  });
});
