/**
 * The network verbs through the CLI (scripts/ssync as child processes): keygen, listen,
 * push, pull on a 4 GiB sparse image, host-key policy, pairing, a client killed mid-push.
 * Each test has its own config folders (XDG_CONFIG_HOME) for the client and the listener.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { formatPublicKey } from "../src/trust/keys.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { type CliSetup, withCliSetup } from "./helpers/cli-setup.ts";
import { finished, runCli, spawnCli, waitFor } from "./helpers/network.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const BLOCK = 65536;

/** The shared CLI set-up, its key made by `ssync keygen`, which printed it and wrote it 0600. */
async function withSetup(options: { authorize?: boolean; listenArgs?: string[] }, body: (s: CliSetup) => Promise<void>): Promise<void> {
  await withCliSetup(options, async (s) => {
    assert.match(s.keygen!.stdout, /^ssync-x25519 \S+ /m);
    assert.match(s.keygen!.stdout, /fingerprint SHA256:/);
    assert.equal(fs.statSync(path.join(s.client, "ssync", "id_ssync")).mode & 0o777, 0o600);
    await body(s);
  });
}

function json(stdout: string): Record<string, number | string | boolean> {
  return JSON.parse(stdout.trim().split("\n").pop()!);
}

function writeBlock(file: string, offset: number, fill: number): void {
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, new Uint8Array(BLOCK).fill(fill), 0, BLOCK, offset);
  } finally {
    fs.closeSync(fd);
  }
}

describe("ssync push and pull over the network", () => {
  test("keygen refuses to overwrite a key; push without a key says to run keygen", { timeout: 60_000 }, async () => {
    await withTempDir(async (dir) => {
      const first = await runCli(["keygen", "-f", path.join(dir, "k")], { config: dir });
      assert.equal(first.code, 0, first.stderr);
      assert.ok(fs.existsSync(path.join(dir, "k.pub")));
      const again = await runCli(["keygen", "-f", path.join(dir, "k")], { config: dir });
      assert.notEqual(again.code, 0);
      assert.match(again.stderr, /already exists/);
      fs.writeFileSync(path.join(dir, "f"), "x");
      const push = await runCli(["push", path.join(dir, "f"), "127.0.0.1:1"], { config: path.join(dir, "empty") });
      assert.equal(push.code, 2);
      assert.match(push.stderr, /No key: run ssync keygen/);
    });
  });

  test("push new, push changes, pull new, pull to repair: 4 GiB sparse, identical, sparse, only changed blocks cross", { timeout: 180_000 }, async () => {
    await withSetup({}, async ({ dir, client, root, listener }) => {
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, {
        size: 4 * GiB,
        chunks: [{ offset: 0, length: 1 * MiB }, { offset: 1 * GiB, length: 2 * MiB, fill: "random" }, { offset: 3.5 * GiB, length: 1 * MiB }],
      });
      const remote = `127.0.0.1:${listener.port}`;
      const dst = path.join(root, "vm.img");
      const srcAllocated = () => allocatedBytesOf(src);

      // 1. push to a new file (REMOTE defaults to the local name)
      let r = await runCli(["push", "--accept-new", "--json", src, remote], { config: client });
      assert.equal(r.code, 0, r.stderr);
      let s = json(r.stdout);
      assert.equal(s.blocksSent, (4 * MiB) / BLOCK);
      assert.equal(s.bytesWritten, 4 * MiB);
      assert.equal(fs.statSync(dst).size, 4 * GiB);
      assert.equal(fileHash(dst), fileHash(src));
      assert.ok(allocatedBytesOf(dst) <= srcAllocated() + BLOCK, `${allocatedBytesOf(dst)} allocated`);
      assert.match(listener.stderr(), /push "vm\.img".*: ok/);

      // 2. push changes: 3 blocks (one in a hole, two in data), with --verify
      writeBlock(src, 2 * GiB, 7);
      writeBlock(src, 1 * GiB + BLOCK, 8);
      writeBlock(src, 0, 9);
      r = await runCli(["push", "--json", "--verify", src, `${remote}:vm.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      s = json(r.stdout);
      assert.equal(s.blocksSent, 3);
      assert.equal(s.dataBytesSent, 3 * BLOCK);
      assert.equal(s.bytesWritten, 3 * BLOCK);
      assert.equal(s.verified, true);
      assert.ok((s.wireBytesSent as number) < 3 * BLOCK + 64 * 1024, `${s.wireBytesSent} bytes sent`);
      assert.equal(fileHash(dst), fileHash(src));
      assert.ok(allocatedBytesOf(dst) <= srcAllocated() + BLOCK);

      // 3. pull a new file
      const local = path.join(dir, "copy.img");
      r = await runCli(["pull", "--json", `${remote}:vm.img`, local], { config: client });
      assert.equal(r.code, 0, r.stderr);
      s = json(r.stdout);
      assert.equal(s.blocksSent, (4 * MiB) / BLOCK + 1);
      assert.equal(fileHash(local), fileHash(src));
      assert.ok(allocatedBytesOf(local) <= srcAllocated() + BLOCK);

      // 4. pull to repair a changed local copy: one data block changed, two hole blocks written
      writeBlock(local, 1 * GiB, 1);
      writeBlock(local, 3 * GiB, 2);
      writeBlock(local, 3 * GiB + 10 * BLOCK, 3);
      r = await runCli(["pull", "--json", "--verify", `${remote}:vm.img`, local], { config: client });
      assert.equal(r.code, 0, r.stderr);
      s = json(r.stdout);
      assert.equal(s.blocksSent, 1);
      assert.equal(s.zeroBytesSent, 2 * BLOCK);
      assert.equal(s.holeBytesPunched, 2 * BLOCK);
      assert.equal(s.verified, true);
      assert.equal(fileHash(local), fileHash(src));
      assert.ok(allocatedBytesOf(local) <= srcAllocated() + BLOCK);
    });
  });

  test("host keys: unknown refused without --accept-new; --host-key pins; a changed key is refused", { timeout: 90_000 }, async () => {
    await withSetup({}, async ({ dir, client, root, listener }) => {
      const src = path.join(dir, "a.img");
      makeSparseFile(src, { size: 8 * MiB, chunks: [{ offset: MiB, length: MiB }] });
      const remote = `127.0.0.1:${listener.port}:a.img`;
      const knownHosts = path.join(client, "ssync", "known_hosts");

      let r = await runCli(["push", src, remote], { config: client });
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /host key of 127\.0\.0\.1:\d+ is unknown/);
      assert.ok(r.stderr.includes(listener.fingerprint), "the fingerprint is shown");
      assert.deepEqual(fs.readdirSync(root), []);
      assert.equal(fs.existsSync(knownHosts), false);

      r = await runCli(["push", "--host-key", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", src, remote], { config: client });
      assert.equal(r.code, 5, r.stderr);
      assert.deepEqual(fs.readdirSync(root), []);

      r = await runCli(["push", "--host-key", listener.fingerprint, src, remote], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.match(fs.readFileSync(knownHosts, "utf8"), new RegExp(`^127\\.0\\.0\\.1:${listener.port} ssync-x25519 `, "m"));
      r = await runCli(["push", src, remote], { config: client });
      assert.equal(r.code, 0, r.stderr);

      // Another key pinned for this host:port: a relay in the middle, or a replaced listener.
      fs.writeFileSync(knownHosts, `127.0.0.1:${listener.port} ${formatPublicKey(generateKeyPair().publicKey)}\n`);
      const before = fileHash(path.join(root, "a.img"));
      makeSparseFile(src, { size: 8 * MiB, chunks: [{ offset: 0, length: MiB, seed: 5 }] });
      for (const extra of [[], ["--accept-new"]]) {
        r = await runCli(["push", ...extra, src, remote], { config: client });
        assert.equal(r.code, 5, r.stderr);
        assert.match(r.stderr, /CHANGED/);
      }
      assert.equal(fileHash(path.join(root, "a.img")), before);
    });
  });

  test("a key not in authorized_keys is refused and nothing is written", { timeout: 60_000 }, async () => {
    await withSetup({ authorize: false }, async ({ dir, client, root, listener }) => {
      const src = path.join(dir, "a.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: 0, length: MiB }] });
      const r = await runCli(["push", "--accept-new", src, `127.0.0.1:${listener.port}`], { config: client });
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /does not authorize our key/);
      assert.deepEqual(fs.readdirSync(root), []);
      assert.match(listener.stderr(), /is not authorized/);
    });
  });

  test("pairing: a one-time code lets a new client in once; both sides record each other's keys", { timeout: 90_000 }, async () => {
    await withSetup({ authorize: false, listenArgs: ["--pair"] }, async ({ dir, client, server, root, listener }) => {
      await waitFor(() => listener.stdoutLines.some((l) => /^pairing code /.test(l)), { timeoutMs: 5000, what: "pairing code" });
      const code = /^pairing code (\S+)/.exec(listener.stdoutLines.find((l) => /^pairing code /.test(l))!)![1];
      assert.ok(code.replace(/-/g, "").length * 5 >= 128, code);
      const src = path.join(dir, "a.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: 0, length: MiB }] });
      const remote = `127.0.0.1:${listener.port}`;

      // A wrong code: refused, nothing recorded.
      const wrong = code.slice(0, -1) + (code.endsWith("A") ? "B" : "A");
      let r = await runCli(["push", "--pair", wrong, src, remote], { config: client });
      assert.equal(r.code, 5, r.stderr);
      assert.deepEqual(fs.readdirSync(root), []);

      r = await runCli(["push", "--pair", code.toLowerCase(), src, remote], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(path.join(root, "a.img")), fileHash(src));
      const clientPub = fs.readFileSync(path.join(client, "ssync", "id_ssync.pub"), "utf8").split(" ")[1];
      const authorized = fs.readFileSync(path.join(server, "ssync", "authorized_keys"), "utf8");
      assert.ok(authorized.includes(clientPub), authorized);
      assert.match(authorized, /paired \d{4}-\d{2}-\d{2}/);
      assert.match(fs.readFileSync(path.join(client, "ssync", "known_hosts"), "utf8"), new RegExp(`^127\\.0\\.0\\.1:${listener.port} `, "m"));

      // From now on the client needs no code and no --accept-new.
      r = await runCli(["pull", `${remote}:a.img`, path.join(dir, "back.img")], { config: client });
      assert.equal(r.code, 0, r.stderr);

      // The code was consumed: another client cannot use it.
      const other = path.join(dir, "other-config");
      assert.equal((await runCli(["keygen"], { config: other })).code, 0);
      r = await runCli(["push", "--pair", code, src, `${remote}:b.img`], { config: other });
      assert.equal(r.code, 5, r.stderr);
      assert.match(r.stderr, /pair/);
      assert.equal(fs.existsSync(path.join(root, "b.img")), false);
      assert.equal(fs.readFileSync(path.join(server, "ssync", "authorized_keys"), "utf8"), authorized);
    });
  });

  test("the client killed mid-push: the listener stays up and a rerun ends identical", { timeout: 120_000 }, async () => {
    await withSetup({}, async ({ dir, client, root, listener }) => {
      const src = path.join(dir, "big.img");
      makeSparseFile(src, { size: 256 * MiB, chunks: [{ offset: 0, length: 200 * MiB, fill: "random" }] });
      const dst = path.join(root, "big.img");
      const child = spawnCli(["push", "--accept-new", src, `127.0.0.1:${listener.port}`], { config: client });
      const done = finished(child, 60_000);
      const partial = path.join(root, ".big.img.ssync-partial");
      await waitFor(() => fs.existsSync(partial) && allocatedBytesOf(partial) > 8 * MiB, { timeoutMs: 30_000, everyMs: 2, what: "data in the partial file" });
      child.kill("SIGKILL");
      const killed = await done;
      assert.equal(killed.signal, "SIGKILL", "the push was killed before it finished");
      assert.ok(!fs.existsSync(dst), "nothing under the name before the commit");
      await waitFor(() => /big\.img".*(failed|ended before commit)/.test(listener.stderr()), { timeoutMs: 10_000, what: "the listener's log line" });
      const r = await runCli(["push", "--json", src, `127.0.0.1:${listener.port}`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.ok((json(r.stdout).blocksSent as number) < (200 * MiB) / BLOCK, "the rerun sends only what is missing");
      assert.equal(fileHash(dst), fileHash(src));
      assert.equal(listener.child.exitCode, null, "the listener is still running");
    });
  });
});
