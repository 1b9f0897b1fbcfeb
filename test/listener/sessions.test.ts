/**
 * Who gets a session, against authorized but hostile keys (issue 7, "Why" 4):
 * 1. one read-only key holding dry runs open never blocks a writer: a dry run takes no lock,
 *    and the key's sessions beyond its cap are refused (ERROR EBUSY) while other keys are
 *    served;
 * 2. a dry run is served while a writer holds the file (it reads the old image: the writer's
 *    changes are in its journal until commit; it writes nothing);
 * 3. the cap on sessions in all;
 * 4. a key listed on skipped authorized_keys lines cannot pair its way to a line without options.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { encode } from "../../protocol/codec.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import type { SecureConnection } from "../../src/net/secure-connection.ts";
import { openDestination } from "../../src/storage/open-destination.ts";
import { lockFilePath } from "../../src/storage/lock-file.ts";
import { formatPublicKey } from "../../src/trust/keys.ts";
import { PairingOffer } from "../../src/trust/pairing-code.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, holdAtSend, startListener, type TestServer } from "../helpers/network.ts";
import { nextMessage, openMessage, rawConnect } from "../helpers/raw-client.ts";

const T = { timeout: 60_000 };
const MiB = 1 << 20;
let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** A raw dry-run push session on `name`, answered (OPEN_OK, ERROR...) and left open. */
async function openDryRun(server: TestServer, key: KeyPair, dir: string, name: string, size: number) {
  const conn = await rawConnect(server, key, dir);
  await conn.channel.send(encode(openMessage({ mode: "push", name, size, dryRun: true })));
  return { conn, reply: await nextMessage(conn) };
}

async function closeAll(conns: SecureConnection[]): Promise<void> {
  await Promise.all(conns.map((c) => c[Symbol.asyncDispose]().catch(() => {})));
}

test("a writer is served while one read-only key holds dry runs open; that key's sessions beyond its cap are refused, others served", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, maxSessionsPerKey: 8 });
    const reader = generateKeyPair();
    const otherReader = generateKeyPair();
    const writer = generateKeyPair();
    authorize(server.authorizedKeys, reader, { options: "read-only" });
    authorize(server.authorizedKeys, otherReader, { options: "read-only" });
    authorize(server.authorizedKeys, writer);
    const target = path.join(server.root, "shared.img");
    makeSparseFile(target, { size: 4 * MiB, chunks: [{ offset: 0, length: MiB, seed: 1 }] });
    const held: SecureConnection[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const { conn, reply } = await openDryRun(server, reader, dir, "shared.img", 4 * MiB);
        held.push(conn);
        assert.equal(reply?.type, "OPEN_OK", `dry run ${i}`);
      }
      const ninth = await openDryRun(server, reader, dir, "shared.img", 4 * MiB);
      held.push(ninth.conn);
      assert.equal(ninth.reply?.type, "ERROR");
      assert.ok(ninth.reply?.type === "ERROR" && ninth.reply.code === "EBUSY" && /for this key, its limit per key/.test(ninth.reply.message), JSON.stringify(ninth.reply));
      const other = await openDryRun(server, otherReader, dir, "shared.img", 4 * MiB);
      held.push(other.conn);
      assert.equal(other.reply?.type, "OPEN_OK", "another key is served");
      // The writer: neither the dry runs' descriptors nor their number holds it out.
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 4 * MiB, chunks: [{ offset: MiB, length: 2 * MiB, seed: 2 }] });
      const report = await clientSync(server, { mode: "push", local: src, name: "shared.img", key: writer, pool, knownHosts: path.join(dir, "known_hosts") });
      assert.ok(report.local.blocksSent > 0);
      assert.equal(fileHash(target), fileHash(src));
      assert.equal(server.listener.load.sessions, 9, "the dry runs are still open");
    } finally {
      await closeAll(held);
      await server.listener.close();
    }
  });
});

test("a dry run is served while a writer holds the file: it takes no lock", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const writer = generateKeyPair();
    const reader = generateKeyPair();
    authorize(server.authorizedKeys, writer);
    authorize(server.authorizedKeys, reader, { options: "read-only" });
    const knownHosts = path.join(dir, "known_hosts");
    const a = path.join(dir, "a.img");
    const b = path.join(dir, "b.img");
    makeSparseFile(a, { size: 2 * MiB, chunks: [{ offset: 0, length: 2 * MiB, seed: 3 }] });
    makeSparseFile(b, { size: 2 * MiB, chunks: [{ offset: 0, length: MiB, seed: 4 }] });
    makeSparseFile(path.join(server.root, "busy.img"), { size: 2 * MiB });
    // The writer is held right after OPEN_OK: the file is open and locked at the listener.
    const hold = holdAtSend(2);
    const push = clientSync(server, { mode: "push", local: a, name: "busy.img", key: writer, pool, knownHosts, wrap: hold.wrap });
    push.catch(() => {});
    await hold.reached;
    try {
      const report = await clientSync(server, { mode: "push", local: b, name: "busy.img", key: reader, pool, knownHosts, dryRun: true });
      assert.equal(report.remoteSizeBefore, 2 * MiB, "the dry run saw the writer's file");
    } finally {
      hold.release();
    }
    await push;
    assert.equal(fileHash(path.join(server.root, "busy.img")), fileHash(a));
    await server.listener.close();
  });
});

test("without flock a dry run makes no lock file and a writer opens beside it", T, async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, "f.img");
    fs.writeFileSync(file, "");
    await using dry = await openDestination(file, { create: false, readOnly: true, ffi: false });
    assert.equal(fs.existsSync(lockFilePath(file)), false);
    await using writer = await openDestination(file, { create: false, ffi: false });
    assert.equal(fs.existsSync(lockFilePath(file)), true, "the writer's lock file");
    assert.equal(dry.size, writer.size);
  });
});

test("the cap on sessions in all refuses with EBUSY, whatever the key", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, maxSessions: 2 });
    const keys = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
    for (const k of keys) authorize(server.authorizedKeys, k, { options: "read-only" });
    fs.writeFileSync(path.join(server.root, "t.img"), "");
    const held: SecureConnection[] = [];
    try {
      for (const [i, k] of keys.entries()) {
        const { conn, reply } = await openDryRun(server, k, dir, "t.img", 0);
        held.push(conn);
        if (i < 2) assert.equal(reply?.type, "OPEN_OK");
        else assert.ok(reply?.type === "ERROR" && reply.code === "EBUSY" && /already serves 2, its limit/.test(reply.message), JSON.stringify(reply));
      }
    } finally {
      await closeAll(held);
      await server.listener.close();
    }
  });
});

test("a key listed on skipped authorized_keys lines cannot pair its way in; the code stays valid", T, async () => {
  await withTempDir(async (dir) => {
    const pairing = new PairingOffer();
    const server = await startListener(dir, { pool, pairing });
    const listedTwice = generateKeyPair();
    // Twice, once read-only: authorized by neither line.
    fs.appendFileSync(server.authorizedKeys, `read-only ${formatPublicKey(listedTwice.publicKey, { comment: "a" })}\n`, { mode: 0o600 });
    fs.appendFileSync(server.authorizedKeys, `${formatPublicKey(listedTwice.publicKey, { comment: "b" })}\n`);
    fs.chmodSync(server.authorizedKeys, 0o600);
    const before = fs.readFileSync(server.authorizedKeys, "utf8");
    try {
      await assert.rejects(rawConnect(server, listedTwice, dir, pairing.code));
      assert.equal(fs.readFileSync(server.authorizedKeys, "utf8"), before, "nothing was appended");
      assert.ok(server.logs.some((l) => /pairing refused: key \S+ is listed .* on lines that were skipped/.test(l)), server.logs.join("\n"));
      const fresh = generateKeyPair();
      const conn = await rawConnect(server, fresh, dir, pairing.code);
      await conn[Symbol.asyncDispose]();
    } finally {
      await server.listener.close();
    }
  });
});
