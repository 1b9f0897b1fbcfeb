/** Block devices are served only as named exports: a device node under --root is refused. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { RemoteError } from "../../src/util/errors.ts";
import { makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, startListener } from "../helpers/network.ts";

test("a block device node under the root is refused for push and pull", { timeout: 30_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const pool = new WorkerPool({ size: 1 });
    const server = await startListener(dir, { pool });
    try {
      const node = path.join(server.root, "disk");
      if (spawnSync("mknod", [node, "b", "7", "0"]).status !== 0) return t.skip("mknod is not allowed here");
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const local = path.join(dir, "local.img");
      makeSparseFile(local, { size: 1 << 20, chunks: [{ offset: 0, length: 4096 }] });
      for (const mode of ["push", "pull"] as const) {
        await assert.rejects(
          clientSync(server, { mode, local, name: "disk", key, pool, knownHosts: path.join(dir, "known_hosts") }),
          (e) => e instanceof RemoteError && e.code === "EACCES" && /served only as named exports/.test(e.message),
          mode,
        );
      }
    } finally {
      await server.listener.close();
      await pool[Symbol.asyncDispose]();
    }
  });
});
