/** push and pull to [::1]:PORT:PATH through the CLI, when this machine has IPv6 loopback. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { runCli, startListener } from "../helpers/network.ts";

async function hasIpv6Loopback(): Promise<boolean> {
  const server = createServer();
  return await new Promise((resolve) => {
    server.once("error", () => resolve(false));
    server.listen(0, "::1", () => server.close(() => resolve(true)));
  });
}

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

test("push and pull over [::1]", { timeout: 60_000 }, async (t) => {
  if (!(await hasIpv6Loopback())) {
    t.skip("no IPv6 loopback here");
    return;
  }
  await withTempDir(async (dir) => {
    const config = path.join(dir, "config");
    assert.equal((await runCli(["keygen"], { config })).code, 0);
    const server = await startListener(dir, { pool, host: "::1" });
    try {
      fs.copyFileSync(path.join(config, "ssync", "id_ssync.pub"), server.authorizedKeys);
      const src = path.join(dir, "a.img");
      makeSparseFile(src, { size: 64 << 20, chunks: [{ offset: 8 << 20, length: 1 << 20 }] });
      const remote = `[::1]:${server.listener.port}`;
      let r = await runCli(["push", "--accept-new", src, `${remote}:v6.img`], { config });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(path.join(server.root, "v6.img")), fileHash(src));
      assert.match(fs.readFileSync(path.join(config, "ssync", "known_hosts"), "utf8"), /^\[::1\]:\d+ ssync-x25519 /m);
      r = await runCli(["pull", `${remote}:v6.img`, path.join(dir, "back.img")], { config });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(path.join(dir, "back.img")), fileHash(src));
    } finally {
      await server.listener.close();
    }
  });
});
