/**
 * authorized_keys and known_hosts writable by group or others are refused (StrictModes; the
 * whole walk is test/trust-strict-modes.test.ts); a bad authorized_keys line costs only its
 * own key at a real listener.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { readAuthorizedKeys } from "../src/trust/authorized-keys.ts";
import { formatPublicKey } from "../src/trust/keys.ts";
import { lookupKnownHost } from "../src/trust/known-hosts.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { describeError } from "../src/cli/exit-code.ts";
import { RemoteError } from "../src/util/errors.ts";
import { AuthenticationError } from "../src/util/errors.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";
import { authorize, clientSync, startListener } from "./helpers/network.ts";
import { dial } from "../src/net/dial.ts";

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

test("trust files writable by others are refused; private ones are read", { timeout: 10_000 }, async () => {
  await withTempDir(async (dir) => {
    const pk = generateKeyPair().publicKey;
    const ak = path.join(dir, "authorized_keys");
    fs.writeFileSync(ak, formatPublicKey(pk, { comment: "t" }) + "\n", { mode: 0o600 });
    fs.chmodSync(ak, 0o600);
    assert.equal((await readAuthorizedKeys(ak)).length, 1);
    fs.chmodSync(ak, 0o620);
    await assert.rejects(readAuthorizedKeys(ak), /Refusing authorized keys .*writable by group or others \(mode 0620\)/);
    const kh = path.join(dir, "known_hosts");
    fs.writeFileSync(kh, "");
    fs.chmodSync(kh, 0o646);
    await assert.rejects(lookupKnownHost(kh, { host: "h", port: 1, publicKey: pk }), /Refusing known hosts .*mode 0646/);
  });
});

test("a bad authorized_keys line leaves the other keys working at the listener", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const good = generateKeyPair();
      const twice = generateKeyPair();
      const wholeRoot = generateKeyPair();
      const typo = generateKeyPair();
      fs.writeFileSync(server.authorizedKeys, "# keys\nthis line is not a key\n", { mode: 0o600 });
      authorize(server.authorizedKeys, typo, { options: "read-onyl" });
      authorize(server.authorizedKeys, twice);
      authorize(server.authorizedKeys, good, { options: "path=vm" });
      authorize(server.authorizedKeys, twice, { options: "read-only,path=vm" });
      authorize(server.authorizedKeys, wholeRoot, { options: "path=/" });
      fs.writeFileSync(server.authorizedKeys, `ssync-x25519 ${"A".repeat(10)}\n`, { flag: "a" });
      fs.mkdirSync(path.join(server.root, "vm"));
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 1 << 20, chunks: [{ offset: 0, length: 65536 }] });
      const knownHosts = path.join(dir, "known_hosts");
      const push = (key: typeof good) => clientSync(server, { mode: "push", local: src, name: "vm/a.img", key, pool, knownHosts });
      await push(good);
      assert.equal(fileHash(path.join(server.root, "vm", "a.img")), fileHash(src));
      for (const refusedKey of [twice, wholeRoot, typo]) {
        await assert.rejects(push(refusedKey), (e: Error) => e instanceof AuthenticationError && /does not authorize our key/.test(e.message));
      }
    } finally {
      await server.listener.close();
    }
  });
});

test("a peer's control characters are printed escaped", () => {
  const line = describeError(new RemoteError("EIO", "bad\nssync: fake line\x1b[31m"));
  assert.equal(line.includes("\n"), false);
  assert.equal(line.includes("\x1b"), false);
  assert.match(line, /bad\\u000assync: fake line\\u001b\[31m/);
});

test("an unreadable known_hosts line for the host: the client is warned, and the key counts as changed", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const knownHosts = path.join(dir, "known_hosts");
      fs.writeFileSync(knownHosts, `[127.0.0.1]:${server.listener.port} not-a-key\n`, { mode: 0o600 });
      const warnings: string[] = [];
      await assert.rejects(
        dial({ host: "127.0.0.1", port: server.listener.port, staticKey: key, knownHostsFile: knownHosts, acceptNew: true, warn: (m) => warnings.push(m) }),
        (e) => e instanceof AuthenticationError && /CHANGED.*line 1 \(unreadable\)/.test(e.message),
      );
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.match(warnings[0], new RegExp(`${knownHosts.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.*line 1`));
    } finally {
      await server.listener.close();
    }
  });
});
