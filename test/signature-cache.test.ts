/**
 * The destination's signature cache (spec §5.10) against a real listener on 127.0.0.1 (in this
 * process) and real sparse files: what the destination read (COMMIT_OK's bytesRead, our own
 * counters), the key OPEN_OK carried on the wire, the entries in the cache folder, and the bytes
 * on disk after each sync.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { decode, encode } from "../protocol/codec.ts";
import type { HashAlgorithm } from "../protocol/constants.ts";
import type { OpenOkMessage } from "../protocol/messages.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { dial } from "../src/net/dial.ts";
import { IncompleteOnLossChannel } from "../src/net/incomplete-on-loss-channel.ts";
import type { RecordChannel } from "../src/net/record-channel.ts";
import type { KeyPair } from "../src/noise/x25519.ts";
import { DEFAULT_CACHE_MAX_AGE_MS } from "../src/session/cache-session.ts";
import { type ClientCache, runClient, type SyncReport } from "../src/session/client-session.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { openSource } from "../src/storage/open-source.ts";
import { fileStamp, type FileStamp } from "../src/storage/file-stamp.ts";
import { CACHE_MIN_SIZE } from "../src/session/cache-session.ts";
import { SignatureCache } from "../src/storage/signature-cache.ts";
import { removeUnder } from "../src/storage/tree-folder.ts";
import { dialBatch } from "../src/session/dial-batch.ts";
import { joinRecord } from "../src/util/record-parts.ts";
import { authorize, makeKey, startListener, type TestServer } from "./helpers/network.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const BLOCK = 65536;
const SIZE = 16 * MiB;
const CHUNKS = [{ offset: 0, length: 4 * MiB }, { offset: 6 * MiB, length: 3 * MiB, fill: "random" as const }, { offset: 12 * MiB, length: 2 * MiB }];

interface Fixture {
  dir: string;
  server: TestServer;
  pool: WorkerPool;
  key: KeyPair;
  knownHosts: string;
  /** The listener's cache folder. */
  sigs: string;
  src: string;
  /** The destination, under the listener's root. */
  dst: string;
}

async function withFixture(body: (f: Fixture) => Promise<void>, o: { maxAgeMs?: number; exports?: Map<string, string> } = {}): Promise<void> {
  await withTempDir(async (dir) => {
    const pool = new WorkerPool({ size: 2 });
    const key = await makeKey(path.join(dir, "client_key"));
    const authorizedKeys = path.join(dir, "authorized_keys");
    authorize(authorizedKeys, key);
    const sigs = path.join(dir, "signatures");
    const server = await startListener(dir, {
      pool,
      authorizedKeysFile: authorizedKeys,
      cache: { cache: new SignatureCache(sigs), maxAgeMs: o.maxAgeMs ?? DEFAULT_CACHE_MAX_AGE_MS },
      ...(o.exports ? { exports: o.exports } : {}),
    });
    const src = path.join(dir, "vm.img");
    makeSparseFile(src, { size: SIZE, chunks: CHUNKS });
    try {
      await body({ dir, server, pool, key, knownHosts: path.join(dir, "known_hosts"), sigs, src, dst: path.join(server.root, "vm.img") });
    } finally {
      await server.listener[Symbol.asyncDispose]();
      await pool[Symbol.asyncDispose]();
    }
  });
}

interface Seen {
  openOk?: OpenOkMessage;
}

/** One session as the CLI runs it, recording the OPEN_OK received; `forceOffer` sets OPEN_CACHE_KEY whatever the client would. */
async function session(
  f: Fixture,
  o: {
    mode: "push" | "pull";
    local: string;
    name?: string;
    key?: KeyPair;
    dryRun?: boolean;
    blockSize?: number;
    hash?: HashAlgorithm;
    cacheKey?: boolean;
    cache?: ClientCache;
    forceOffer?: boolean;
    seen?: Seen;
    /** Fails the session when the client is about to send COMMIT (a sync cut off before its commit). */
    failAtCommit?: boolean;
    /** Another listener's port (default the fixture's). */
    port?: number;
  },
): Promise<SyncReport> {
  const dryRun = o.dryRun ?? false;
  const store = o.mode === "push" ? await openSource(o.local) : await openDestination(o.local, { create: !dryRun, readOnly: dryRun });
  try {
    const conn = await dial({ host: "127.0.0.1", port: o.port ?? f.server.listener.port, staticKey: o.key ?? f.key, knownHostsFile: f.knownHosts, acceptNew: true, timeoutMs: 5000 });
    try {
      const inner: RecordChannel = new IncompleteOnLossChannel(conn.channel, { peer: "listener" });
      const channel: RecordChannel = {
        async send(record) {
          let rec = joinRecord(record);
          const m = decode(rec);
          if (m.type === "OPEN" && o.forceOffer) rec = encode({ ...m, cacheKey: true });
          if (m.type === "COMMIT" && o.failAtCommit) throw new Error("cut off before COMMIT");
          return await inner.send(rec);
        },
        async receive() {
          const rec = await inner.receive();
          if (rec !== null) {
            const m = decode(rec);
            if (m.type === "OPEN_OK" && o.seen) o.seen.openOk = m;
          }
          return rec;
        },
        close: (reason) => inner.close(reason),
        [Symbol.asyncDispose]: () => inner[Symbol.asyncDispose](),
      };
      return await runClient(channel, store, {
        mode: o.mode,
        name: o.name ?? "vm.img",
        blockSize: o.blockSize ?? BLOCK,
        hash: o.hash ?? "poly1305",
        dryRun,
        pool: f.pool,
        ...(o.cacheKey === false ? { cacheKey: false } : {}),
        ...(o.cache ? { cache: { ...o.cache, peer: conn.remoteStatic } } : {}),
      });
    } finally {
      await conn[Symbol.asyncDispose]().catch(() => {});
    }
  } finally {
    await store[Symbol.asyncDispose]();
  }
}

const push = (f: Fixture, o: Partial<Parameters<typeof session>[1]> = {}) => session(f, { mode: "push", local: f.src, ...o });

/** Writes `fill` over block `index` of `file`. */
function writeBlock(file: string, index: number, fill: number | "random"): void {
  const buf = new Uint8Array(BLOCK);
  if (fill === "random") for (let i = 0; i < BLOCK; i++) buf[i] = (Math.random() * 256) | 0;
  else buf.fill(fill);
  const fd = fs.openSync(file, "r+");
  try {
    fs.writeSync(fd, buf, 0, BLOCK, index * BLOCK);
  } finally {
    fs.closeSync(fd);
  }
}

/** 1% of the image's 256 blocks, in its data and in a hole. */
function changeOnePercent(file: string, seed: number): void {
  writeBlock(file, 3, 0x10 + seed);
  writeBlock(file, 100, "random");
  writeBlock(file, 200, 0x20 + seed); // in the hole at 12.5 MiB: data where there was none
}

function entries(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.endsWith(".sig")) : [];
}

/** Size and times to the ns, as ssync reads them (statx: Deno's node:fs rounds ctime to seconds). */
function stampOf(file: string): FileStamp {
  const fd = fs.openSync(file, "r");
  try {
    return fileStamp(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** mtime as `touch -d` takes it, to the nanosecond. */
function touchStamp(ns: bigint): string {
  return `@${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, "0")}`;
}

describe("signature cache", () => {
  test("codec: OPEN_CACHE_KEY and CAP_CACHE_KEY with its 32-byte key after any METADATA trailer, exact lengths", () => {
    const key = new Uint8Array(32).map((_, i) => i + 1);
    const ok: OpenOkMessage = { type: "OPEN_OK", cookie: 7, size: 4096, zstd: true, kind: "file", metadata: { mode: 0o644 }, cacheKey: key };
    const rec = encode(ok);
    assert.deepEqual(decode(rec), ok);
    assert.equal(rec.length, 32 + 13 + 28 + 32);
    const bare = encode({ type: "OPEN_OK", cookie: 7, size: 4096, zstd: true, kind: "file" });
    assert.equal(decode(bare).type === "OPEN_OK" && (decode(bare) as OpenOkMessage).cacheKey, undefined);
    // The capability without its key (the payload 32 bytes short): a violation.
    const cut = rec.slice(0, rec.length - 32);
    new DataView(cut.buffer).setUint32(24, cut.length - 32);
    assert.throws(() => decode(cut), /OPEN_OK/);
    const open = encode({
      type: "OPEN", cookie: 1, version: 1, mode: "push", hash: "poly1305", blockSize: BLOCK, dryRun: false, clientZstd: true,
      cacheKey: true, size: 1, key, name: "vm.img",
    });
    assert.equal((decode(open) as { cacheKey?: boolean }).cacheKey, true);
  });

  test("a second push of an image with 1% changed reads nothing at the destination and is identical; so is the third", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      const first = await push(f);
      assert.equal(first.cacheUsed, false);
      assert.equal(fileHash(f.dst), fileHash(f.src));
      assert.equal(entries(f.sigs).length, 1, "the first commit leaves an entry");

      changeOnePercent(f.src, 1);
      const seen: Seen = {};
      const second = await push(f, { seen });
      assert.equal(second.cacheUsed, true);
      assert.ok(seen.openOk?.cacheKey, "OPEN_OK carried the cache's key");
      assert.equal(second.remote.bytesRead, 0, "the destination read none of its file to compare");
      assert.ok(second.local.bytesSent > 0 && second.local.bytesSent <= 3 * BLOCK, `sent ${second.local.bytesSent}`);
      assert.equal(fileHash(f.dst), fileHash(f.src));

      // The entry a cache-served sync leaves holds the digests of what it wrote, too.
      changeOnePercent(f.src, 2);
      const third = await push(f);
      assert.equal(third.cacheUsed, true);
      assert.equal(third.remote.bytesRead, 0);
      assert.equal(fileHash(f.dst), fileHash(f.src));
      const fourth = await push(f);
      assert.equal(fourth.cacheUsed, true);
      assert.equal(fourth.local.blocksSent + fourth.local.bytesZeroed, 0, "nothing differs");
      assert.equal(entries(f.sigs).length, 1);
    });
  });

  test("a file below CACHE_MIN_SIZE gets no entry (reading it costs less); one at that size does", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      const small = path.join(f.dir, "small.img");
      makeSparseFile(small, { size: CACHE_MIN_SIZE - BLOCK, chunks: [{ offset: 0, length: BLOCK }] });
      await push(f, { local: small, name: "small.img" });
      await push(f, { local: small, name: "small.img" });
      assert.deepEqual(entries(f.sigs), [], "no entry for a file of less than one range");
      const edge = path.join(f.dir, "edge.img");
      makeSparseFile(edge, { size: CACHE_MIN_SIZE, chunks: [{ offset: 0, length: BLOCK }] });
      await push(f, { local: edge, name: "edge.img" });
      assert.equal(entries(f.sigs).length, 1);
    });
  });

  test("a block rewritten behind ssync's back with its mtime put back (touch -d) is caught by ctime: a full read, a correct result", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      await push(f);
      const before = stampOf(f.dst);
      // Past the timestamp tick of the commit's last change (spec §5.10: a write within it is not seen).
      await new Promise((r) => setTimeout(r, 20));
      writeBlock(f.dst, 5, 0xee);
      const touched = spawnSync("touch", ["-m", "-d", touchStamp(before.mtimeNs), f.dst]);
      assert.equal(touched.status, 0, String(touched.stderr));
      const after = stampOf(f.dst);
      assert.equal(after.mtimeNs, before.mtimeNs, "mtime restored to the ns");
      assert.equal(after.size, before.size);
      assert.notEqual(after.ctimeNs, before.ctimeNs);

      const r = await push(f);
      assert.equal(r.cacheUsed, false);
      assert.ok(r.remote.bytesRead >= 9 * MiB, `the destination read ${r.remote.bytesRead} bytes`);
      assert.ok(r.local.bytesSent > 0 && r.local.bytesSent <= BLOCK, `the tampered block was sent back: ${r.local.bytesSent}`);
      assert.equal(fileHash(f.dst), fileHash(f.src));
    });
  });

  test("a size, block size or hash change, --no-cache and a replaced file each bypass the cache", { timeout: 90_000 }, async () => {
    await withFixture(async (f) => {
      const full = (r: SyncReport, what: string) => {
        assert.equal(r.cacheUsed, false, what);
        assert.ok(r.remote.bytesRead > 0, `${what}: read ${r.remote.bytesRead}`);
        assert.equal(fileHash(f.dst), fileHash(f.src), what);
      };
      await push(f);
      // The source grows by a block: the destination's last block's digest would change.
      fs.truncateSync(f.src, SIZE + BLOCK);
      full(await push(f), "size change");
      assert.equal((await push(f)).cacheUsed, true, "the entry of that sync serves the next");
      full(await push(f, { blockSize: 2 * BLOCK }), "block size change");
      full(await push(f), "block size changed back");
      full(await push(f, { hash: "hmac-sha256" }), "hash change");
      full(await push(f, { hash: "hmac-sha256", cacheKey: false }), "--no-cache");
      assert.equal(entries(f.sigs).length, 0, "--no-cache keeps no entry either");
      full(await push(f, { hash: "hmac-sha256" }), "after --no-cache");
      // The same path, a new inode with the same bytes and mtime.
      const mtime = stampOf(f.dst).mtimeNs;
      const copy = path.join(f.server.root, "copy.img");
      fs.copyFileSync(f.dst, copy);
      spawnSync("touch", ["-m", "-d", touchStamp(mtime), copy]);
      fs.renameSync(copy, f.dst);
      full(await push(f, { hash: "hmac-sha256" }), "replaced file");
      assert.equal((await push(f, { hash: "hmac-sha256" })).cacheUsed, true);
    });
  });

  test("a sync cut off before its commit leaves no entry: the next one reads in full", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      await push(f);
      assert.equal(entries(f.sigs).length, 1);
      changeOnePercent(f.src, 3);
      await assert.rejects(push(f, { failAtCommit: true }), /cut off before COMMIT/);
      // The listener's session ends once it sees the connection go.
      const end = Date.now() + 5000;
      while (Date.now() < end && fs.readdirSync(f.sigs).length > 0) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(fs.readdirSync(f.sigs), [], "no entry, no temporary entry");
      const r = await push(f);
      assert.equal(r.cacheUsed, false);
      assert.ok(r.remote.bytesRead > 0);
      assert.equal(fileHash(f.dst), fileHash(f.src));
    });
  });

  test("a dry run, a read-only key and another writer's key never receive the cached key", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      await push(f);
      const readOnly = await makeKey(path.join(f.dir, "ro_key"));
      authorize(f.server.authorizedKeys, readOnly, { options: "read-only" });
      const other = await makeKey(path.join(f.dir, "other_key"));
      authorize(f.server.authorizedKeys, other);

      for (const [what, key] of [["a dry run", f.key], ["a read-only key's dry run", readOnly]] as const) {
        const seen: Seen = {};
        const r = await push(f, { dryRun: true, forceOffer: true, key, seen });
        assert.ok(seen.openOk, what);
        assert.equal(seen.openOk.cacheKey, undefined, `${what}: OPEN_OK carries no key`);
        assert.equal(r.cacheUsed, false, what);
        assert.ok(r.remote.bytesRead > 0, `${what} reads the destination`);
      }
      await assert.rejects(push(f, { key: readOnly }), /read-only/);
      const pulled = path.join(f.dir, "pulled.img");
      const seen: Seen = {};
      await session(f, { mode: "pull", local: pulled, key: readOnly, forceOffer: true, seen });
      assert.equal(seen.openOk?.cacheKey, undefined, "a pull source offers no key");
      assert.equal(entries(f.sigs).length, 1, "readers leave the entry alone");

      // A writer whose key did not choose the entry's: a fresh key and a full read; its entry replaces the old one.
      const seenOther: Seen = {};
      const r = await push(f, { key: other, seen: seenOther });
      assert.equal(seenOther.openOk?.cacheKey, undefined);
      assert.ok(r.remote.bytesRead > 0);
      assert.equal((await push(f, { key: other })).cacheUsed, true);
      assert.equal((await push(f)).cacheUsed, false, "the first key's entry is gone");
    });
  });

  test("pull: the client's cache answers READ_DIFF; a stale or foreign entry is not used", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      const served = path.join(f.server.root, "vm.img");
      fs.copyFileSync(f.src, served);
      const local = path.join(f.dir, "local.img");
      const mine = (maxAgeMs = DEFAULT_CACHE_MAX_AGE_MS): ClientCache => ({
        policy: { cache: new SignatureCache(path.join(f.dir, "client-sigs")), maxAgeMs },
        path: local,
        peer: new Uint8Array(32), // replaced by the listener's host key in session()
      });
      const pull = (cache?: ClientCache) => session(f, { mode: "pull", local, ...(cache ? { cache } : {}) });
      const first = await pull(mine());
      assert.equal(first.cacheUsed, false);
      assert.equal(entries(path.join(f.dir, "client-sigs")).length, 1);

      changeOnePercent(served, 4);
      const second = await pull(mine());
      assert.equal(second.cacheUsed, true);
      assert.equal(second.local.bytesRead, 0, "our destination was not read");
      assert.ok(second.local.bytesFromCache >= 9 * MiB, `digests of ${second.local.bytesFromCache} bytes from the cache`);
      assert.equal(fileHash(local), fileHash(served));

      changeOnePercent(served, 5);
      const third = await pull(mine());
      assert.equal(third.cacheUsed, true);
      assert.equal(fileHash(local), fileHash(served));

      // Older than --cache-max-age: a full read.
      await new Promise((r) => setTimeout(r, 30));
      const aged = await pull(mine(10));
      assert.equal(aged.cacheUsed, false);
      assert.ok(aged.local.bytesRead > 0);
      assert.equal((await pull(mine())).cacheUsed, true, "the aged run's full read made a fresh entry");
      // --no-cache: the entry is dropped before the sync changes the file, and none is kept.
      changeOnePercent(served, 6);
      const noCache = await pull({ ...mine(), use: false });
      assert.equal(noCache.cacheUsed, false);
      assert.ok(noCache.local.bytesRead > 0);
      assert.equal(entries(path.join(f.dir, "client-sigs")).length, 0);
      assert.equal((await pull(mine())).cacheUsed, false);
      assert.equal(fileHash(local), fileHash(served));
      // Another listener (another host key) serving the same file: the entry's key is not sent to it.
      const other = await startListener(path.join(f.dir, "other"), { pool: f.pool, authorizedKeysFile: f.server.authorizedKeys, root: f.server.root });
      try {
        const foreign = await session(f, { mode: "pull", local, cache: mine(), port: other.listener.port });
        assert.equal(foreign.cacheUsed, false);
        assert.ok(foreign.local.bytesRead > 0);
      } finally {
        await other.listener[Symbol.asyncDispose]();
      }
      assert.equal((await pull(mine())).cacheUsed, false, "the entry now belongs to the other listener");
    });
  });
  test("REMOVE on the listener drops the file's entry; so does a pull client's --delete (removeUnder)", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      await push(f);
      assert.equal(entries(f.sigs).length, 1);
      const batch = await dialBatch({ host: "127.0.0.1", port: f.server.listener.port, staticKey: f.key, knownHostsFile: f.knownHosts, acceptNew: true, timeoutMs: 5000, idleTimeoutMs: 10_000, slots: 1 });
      try {
        await batch.remove("vm.img");
      } finally {
        await batch[Symbol.asyncDispose]();
      }
      assert.equal(fs.existsSync(f.dst), false);
      assert.deepEqual(entries(f.sigs), [], "the entry went with its file");
      // A pull client's: a pulled file's entry, then --delete removes the file (removeUnder).
      fs.copyFileSync(f.src, f.dst);
      const folder = path.join(f.dir, "restore");
      fs.mkdirSync(folder);
      const local = path.join(folder, "vm.img");
      const clientCache = new SignatureCache(path.join(f.dir, "client-sigs"));
      await session(f, { mode: "pull", local, cache: { policy: { cache: clientCache, maxAgeMs: DEFAULT_CACHE_MAX_AGE_MS }, path: local, peer: new Uint8Array(32) } });
      assert.equal(entries(clientCache.dir).length, 1);
      assert.deepEqual(removeUnder(folder, "vm.img", "file", { cache: clientCache }), { removed: true });
      assert.equal(fs.existsSync(local), false);
      assert.deepEqual(entries(clientCache.dir), [], "the pull's entry went with its file");
    });
  });

  test("a push reads no listing of the cache folder: a crash's temporary entries go once, at the first write; a dead one of the same path is replaced", { timeout: 60_000 }, async () => {
    await withFixture(async (f) => {
      fs.mkdirSync(f.sigs, { mode: 0o700 });
      const cache = new SignatureCache(f.sigs);
      const mine = `${cache.entryPath(path.join(f.server.root, "vm.img"))}.tmp`;
      const other = path.join(f.sigs, `${"ab".repeat(20)}.sig.tmp-0123456789abcdef`);
      // Another process's entry being written now (a pull client sharing the folder) stays.
      const live = path.join(f.sigs, `${"cd".repeat(20)}.sig.tmp`);
      fs.writeFileSync(mine, "dead", { mode: 0o600 });
      fs.writeFileSync(other, "dead", { mode: 0o600 });
      fs.writeFileSync(live, "being written", { mode: 0o600 });
      const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
      fs.utimesSync(other, twoDaysAgo, twoDaysAgo);
      await push(f);
      assert.deepEqual(fs.readdirSync(f.sigs).sort(), [...entries(f.sigs), path.basename(live)].sort(), "the first write removed the dead temporary entries, not a live one");
      fs.rmSync(live);
      assert.equal(entries(f.sigs).length, 1);
      // From then on a push lists nothing: the cache folder may hold many entries.
      const listed: string[] = [];
      const readdirSync = fs.readdirSync;
      (fs as { readdirSync: unknown }).readdirSync = (...args: Parameters<typeof fs.readdirSync>) => {
        listed.push(String(args[0]));
        return readdirSync(...args);
      };
      try {
        changeOnePercent(f.src, 7);
        assert.equal((await push(f)).cacheUsed, true);
        fs.writeFileSync(mine, "dead", { mode: 0o600 }); // a crash's, left before the next push of vm.img
        changeOnePercent(f.src, 8);
        await push(f);
      } finally {
        (fs as { readdirSync: unknown }).readdirSync = readdirSync;
      }
      assert.deepEqual(listed.filter((d) => path.resolve(d) === f.sigs), [], "no listing of the cache folder per push");
      assert.deepEqual(fs.readdirSync(f.sigs), entries(f.sigs), "the dead temporary entry was replaced");
      assert.equal(fileHash(f.dst), fileHash(f.src));
    });
  });

  test("a file in an exported folder is cached under the folder's path (NAME/PATH resolved through the export)", { timeout: 60_000 }, async () => {
    await withTempDir(async (outer) => {
      const vms = path.join(outer, "vms");
      fs.mkdirSync(vms);
      await withFixture(async (f) => {
        await push(f, { name: "vms/a.img" });
        assert.equal(fileHash(path.join(vms, "a.img")), fileHash(f.src));
        const key = createHash("sha256").update(path.join(fs.realpathSync(vms), "a.img")).digest("hex").slice(0, 40);
        assert.deepEqual(entries(f.sigs), [`${key}.sig`]);
        changeOnePercent(f.src, 9);
        assert.equal((await push(f, { name: "vms/a.img" })).cacheUsed, true);
      }, { exports: new Map([["vms", vms]]) });
    });
  });
});
