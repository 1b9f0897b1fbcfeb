/**
 * A local user who can write under the root swaps the client's path between the real file
 * and a symbolic link to a file outside the root, as fast as it can, while clients pull and
 * push that path. The listener runs without FFI (SSYNC_NO_FFI=1: no flock, no SEEK_DATA),
 * the configuration in which it once reopened the path by name for every read.
 *
 * Whatever the interleaving, no session may read or write the outside file: every pull that
 * succeeds brings the real file's bytes, and the outside file keeps its bytes and mtime.
 * Bounded: RACE_MS of rounds, each session under the client's own timeouts.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, makeKey, startCliListener } from "../helpers/network.ts";

const RACE_MS = 5000;
const SIZE = 8 << 20;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** Renames only (each atomic): victim → stash, link → victim, victim → link, stash → victim; the real file then stays 20 ms. */
function startSwapper(root: string, outsideFile: string, ms: number) {
  fs.symlinkSync(outsideFile, path.join(root, ".link"));
  const script = `cd "$1"; end=$(( $(date +%s%N) / 1000000 + $2 ));
    while [ $(( $(date +%s%N) / 1000000 )) -lt $end ]; do
      mv -T victim.img .stash; mv -T .link victim.img; mv -T victim.img .link; mv -T .stash victim.img; sleep 0.02
    done`;
  const child = spawn("bash", ["-c", script, "swapper", root, String(ms)], { stdio: "ignore" });
  return new Promise<void>((resolve) => child.once("close", () => resolve()));
}

test("a symlink swapped under the root cannot make a session read or write outside it (no FFI)", { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    const config = path.join(dir, "config");
    const root = path.join(dir, "root");
    const outside = path.join(dir, "outside");
    fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
    fs.mkdirSync(root);
    fs.mkdirSync(outside);
    const secret = path.join(outside, "secret.img");
    makeSparseFile(secret, { size: SIZE, chunks: [{ offset: 0, length: SIZE, seed: 666 }] });
    const victim = path.join(root, "victim.img");
    makeSparseFile(victim, { size: SIZE, chunks: [{ offset: 0, length: SIZE, seed: 1 }] });
    const source = path.join(dir, "source.img");
    fs.copyFileSync(victim, source);
    const realHash = fileHash(victim);
    const secretHash = fileHash(secret);
    const secretMtime = fs.statSync(secret).mtimeMs;

    const key = await makeKey(path.join(dir, "client_key"));
    authorize(path.join(config, "ssync", "authorized_keys"), key);
    const listener = await startCliListener(["--root", root], { config, env: { SSYNC_NO_FFI: "1" } });
    const outcomes = { pulled: 0, pushed: 0, refused: 0 };
    try {
      const swapping = startSwapper(root, secret, RACE_MS);
      let done = false;
      swapping.then(() => (done = true));
      const server = { listener: { port: listener.port, address: `127.0.0.1:${listener.port}` } };
      const knownHosts = path.join(dir, "known_hosts");
      for (let round = 0; !done; round++) {
        const pulled = path.join(dir, "pulled.img");
        fs.rmSync(pulled, { force: true });
        const mode = round % 2 === 0 ? "pull" : "push";
        try {
          await clientSync(server, { mode, local: mode === "pull" ? pulled : source, name: "victim.img", key, pool, knownHosts });
        } catch {
          outcomes.refused++; // refused (a symbolic link, missing, busy) or cut: all allowed
          continue;
        }
        if (mode === "push") {
          outcomes.pushed++;
          continue;
        }
        outcomes.pulled++;
        assert.equal(fileHash(pulled), realHash, `round ${round}: a pull carried bytes that are not the file under the root`);
      }
      await swapping;
    } finally {
      await listener.stop();
    }
    assert.equal(fileHash(secret), secretHash, `the file outside the root changed (${JSON.stringify(outcomes)})`);
    assert.equal(fs.statSync(secret).mtimeMs, secretMtime, "the file outside the root was written");
    assert.equal(fs.statSync(secret).size, SIZE);
    console.log(`symlink race: ${JSON.stringify(outcomes)}`);
    assert.ok(outcomes.pulled > 0 && outcomes.pushed > 0, `the race must let sessions through: ${JSON.stringify(outcomes)}`);
  });
});
