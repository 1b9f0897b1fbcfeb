/**
 * The signature cache (spec §5.10) through the CLI: `ssync listen` keeps it beside its host key,
 * `push` uses it (`--no-cache` does not), `pull` keeps its own in XDG_STATE_HOME, and a listener
 * killed between the entry's removal and its commit leaves no entry behind.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { finished, spawnCli, startCliListener } from "./helpers/network.ts";
import { fileHash, makeSparseFile } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const BLOCK = 65536;

type Summary = Record<string, number | string | boolean>;

function writeBlock(file: string, index: number, fill: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, new Uint8Array(BLOCK).fill(fill), 0, BLOCK, index * BLOCK);
  } finally {
    fs.closeSync(fd);
  }
}

async function cli(args: string[], o: { config: string; state: string }): Promise<{ code: number | null; stderr: string; summary: Summary | undefined }> {
  const r = await finished(spawnCli(args, { config: o.config, env: { XDG_STATE_HOME: o.state } }), 60_000);
  const last = r.stdout.trim().split("\n").pop();
  return { code: r.code, stderr: r.stderr, summary: last ? JSON.parse(last) : undefined };
}

const sigs = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.endsWith(".sig")) : []);

describe("signature cache, CLI", () => {
  test("push uses the listener's cache, --no-cache does not; pull keeps its own; --cache-max-age is pull's", { timeout: 120_000 }, async () => {
    await withCliSetup({ keygen: false }, async ({ dir, client, server, root, remote, listener }) => {
      const state = path.join(dir, "state");
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 4 * MiB }, { offset: 8 * MiB, length: 2 * MiB, fill: "random" }] });
      const o = { config: client, state };
      let r = await cli(["push", "--accept-new", "--json", src, `${remote}:vm.img`], o);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.summary!.destinationCacheUsed, false);
      assert.equal(sigs(path.join(server, "ssync", "signatures")).length, 1, "beside the host key");

      writeBlock(src, 2, 0x41);
      r = await cli(["push", "--json", src, `${remote}:vm.img`], o);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.summary!.destinationCacheUsed, true);
      assert.equal(r.summary!.destinationBytesRead, 0);
      assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
      assert.match(listener.stderr(), /push "vm\.img": read 0 B, digests of [\d.]+ \w+ from the signature cache, /);

      r = await cli(["push", "--no-cache", "--json", src, `${remote}:vm.img`], o);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.summary!.destinationCacheUsed, false);
      assert.ok(Number(r.summary!.destinationBytesRead) > 0);

      r = await cli(["push", "--cache-max-age", "1d", src, `${remote}:vm.img`], o);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /listen --cache-max-age/);

      const local = path.join(dir, "local.img");
      r = await cli(["pull", "--json", `${remote}:vm.img`, local], o);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sigs(path.join(state, "ssync", "signatures")).length, 1, "in the client's state folder");
      writeBlock(path.join(root, "vm.img"), 9, 0x42);
      r = await cli(["pull", "--json", `${remote}:vm.img`, local], o);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.summary!.destinationCacheUsed, true);
      assert.equal(r.summary!.destinationBytesRead, 0);
      assert.equal(fileHash(local), fileHash(path.join(root, "vm.img")));
      r = await cli(["pull", "--json", "--cache-max-age", "0", `${remote}:vm.img`, local], o);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.summary!.destinationCacheUsed, false);
      assert.ok(Number(r.summary!.destinationBytesRead) > 0);
    });
  });

  test("a listener killed after the entry was taken and before the commit point leaves none: the next push reads in full", { timeout: 120_000 }, async () => {
    await withCliSetup({ keygen: false, env: () => ({ SSYNC_TEST_CRASH: "journal-synced" }) }, async ({ dir, client, server, root, remote, listener }) => {
      const state = path.join(dir, "state");
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, { size: 16 * MiB, chunks: [{ offset: 0, length: 4 * MiB }] });
      const o = { config: client, state };
      // A new file commits by rename: no journal, no crash.
      let r = await cli(["push", "--accept-new", "--json", src, `${remote}:vm.img`], o);
      assert.equal(r.code, 0, r.stderr);
      const cacheDir = path.join(server, "ssync", "signatures");
      assert.equal(sigs(cacheDir).length, 1);
      const before = fileHash(path.join(root, "vm.img"));
      writeBlock(src, 1, 0x43);
      r = await cli(["push", "--json", src, `${remote}:vm.img`], o);
      assert.equal(r.code, 4, `the listener died at its commit: ${r.stderr}`);
      assert.notEqual(listener.child.exitCode ?? listener.child.signalCode, null, "the listener is gone");
      assert.deepEqual(sigs(cacheDir), [], "no entry (a temporary one, never renamed into place, may stay)");
      assert.equal(fileHash(path.join(root, "vm.img")), before, "its old image (the journal is rolled back)");

      const again = await startCliListener(["--root", root], { config: server });
      try {
        r = await cli(["push", "--json", "--accept-new", src, `127.0.0.1:${again.port}:vm.img`], o);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.summary!.destinationCacheUsed, false);
        assert.ok(Number(r.summary!.destinationBytesRead) >= 4 * MiB);
        assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
        assert.equal(sigs(cacheDir).length, 1);
        assert.ok(fs.readdirSync(cacheDir).every((n) => n.endsWith(".sig")), "the dead temporary entry was removed");
      } finally {
        await again.stop();
      }
    });
  });
});
