/**
 * Batches (spec "Batches (protocol 2)") against a real listener on 127.0.0.1:
 *
 * 1. A tree of 20 sparse files (0 bytes to 64 MiB apparent, in subfolders made by MKDIR) is
 *    pushed, then pulled, over ONE connection with several slots in flight: every file is
 *    identical, sparse, committed; the listener saw one connection and one handshake.
 * 2. LIST returns exactly the listener's tree (kinds, sizes, mtimes to the ns) and never walks
 *    into a symlinked folder; REMOVE and RMDIR remove what they name.
 * 3. A listener that predates batches (serveSession straight on the connection, as an old
 *    listener does) gets the clear "upgrade it" error.
 * 4. An exported folder: NAME/PATH under it for LIST, MKDIR, OPEN, REMOVE, RMDIR, never out of it;
 *    its journals are recovered at start.
 * 5. One failing file does not stop the others; pushes and pulls started together all run.
 * 6. 100 files of 4 KiB in one batch, timed and printed; 1,000 to `ssync listen` with
 *    SSYNC_BATCH_BENCH=1 (issue 11's figure, target < 3 s), printed, not asserted.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import fs from "node:fs";
import { createServer, type Socket } from "node:net";
import path from "node:path";
import { setImmediate } from "node:timers";
import { decodeBatch, decodeControl, encodeBatch, encodeControl, slotRecord } from "../../protocol/batch-codec.ts";
import type { TreeEntry } from "../../protocol/batch-messages.ts";
import { MAX_LIST_ENTRIES } from "../../protocol/constants.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { ModeGate } from "../../src/listener/batch-server.ts";
import { acceptSecure } from "../../src/net/secure-connection.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import type { BatchClient } from "../../src/session/batch-client.ts";
import { dialBatch } from "../../src/session/dial-batch.ts";
import { serveSession } from "../../src/session/server-session.ts";
import { openDestination } from "../../src/storage/open-destination.ts";
import { openSource } from "../../src/storage/open-source.ts";
import { recoverTree } from "../../src/storage/recover-tree.ts";
import { makeFolderUnder } from "../../src/storage/tree-folder.ts";
import { allocatedBytesOf, fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { makeCliPair } from "../helpers/cli-setup.ts";
import { authorize, startCliListener, startListener, type TestServer } from "../helpers/network.ts";

const T = { timeout: 120_000 };
const MiB = 1 << 20;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

function batchTo(server: TestServer, key: KeyPair, dir: string, slots = 4): Promise<BatchClient> {
  return dialBatch({
    host: "127.0.0.1",
    port: server.listener.port,
    staticKey: key,
    knownHostsFile: path.join(dir, "known_hosts"),
    acceptNew: true,
    timeoutMs: 5000,
    idleTimeoutMs: 30_000,
    slots,
  });
}

/** The 20 files of the tree: name → size and data chunks. */
function treeSpec(): { name: string; size: number; chunks: { offset: number; length: number; seed?: number }[] }[] {
  const files: { name: string; size: number; chunks: { offset: number; length: number; seed?: number }[] }[] = [];
  for (let i = 0; i < 20; i++) {
    const folder = ["", "a/", "a/b/", "c/"][i % 4];
    const size = [0, 4096, 100_000, 3 * MiB, 64 * MiB][i % 5];
    const chunks = size === 0 ? [] : size <= 100_000 ? [{ offset: 0, length: size, seed: i }] : [
      { offset: 0, length: 70_000, seed: i },
      { offset: size - 2 * 65536, length: 65536 + 1234, seed: i + 100 },
    ];
    files.push({ name: `${folder}f${i}.img`, size, chunks });
  }
  return files;
}

/** What LIST should say of `root`: every entry (work files excluded), by lstat. */
function localTree(root: string, prefix = ""): TreeEntry[] {
  const out: TreeEntry[] = [];
  for (const name of fs.readdirSync(path.join(root, prefix))) {
    const rel = prefix + name;
    const st = fs.lstatSync(path.join(root, rel), { bigint: true });
    const kind = st.isFile() ? "file" : st.isDirectory() ? "folder" : st.isSymbolicLink() ? "symlink" : "other";
    out.push({ kind, size: kind === "file" ? Number(st.size) : 0, mtimeNs: st.mtimeNs, name: rel });
    if (kind === "folder") out.push(...localTree(root, rel + "/"));
  }
  return out;
}

const byName = (a: TreeEntry, b: TreeEntry) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

test("20 sparse files pushed and pulled over one connection, several slots in flight", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const src = path.join(dir, "src");
    const back = path.join(dir, "back");
    const spec = treeSpec();
    for (const sub of ["a/b", "c"]) fs.mkdirSync(path.join(src, sub), { recursive: true });
    for (const f of spec) makeSparseFile(path.join(src, f.name), { size: f.size, chunks: f.chunks });
    try {
      const batch = await batchTo(server, key, dir);
      assert.equal(batch.slots, 4);
      // OPEN never creates folders: MKDIR first, parents before children.
      for (const folder of ["a", "a/b", "c"]) await batch.mkdir(folder);
      await batch.mkdir("a"); // an existing folder is success
      const pushes = await Promise.all(spec.map(async (f) => {
        const store = await openSource(path.join(src, f.name));
        try {
          return await batch.sync(store, { mode: "push", name: f.name, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      }));
      assert.equal(pushes.length, 20);
      for (const f of spec) {
        const remote = path.join(server.root, f.name);
        assert.equal(fileHash(remote), fileHash(path.join(src, f.name)), f.name);
        assert.equal(fs.statSync(remote).size, f.size);
        // Sparse: what the destination allocates is the data, not the apparent size.
        assert.ok(allocatedBytesOf(remote) <= allocatedBytesOf(path.join(src, f.name)) + 256 * 1024, `${f.name} is not sparse`);
      }
      // LIST: exactly the tree, to the nanosecond.
      const listed = await batch.list("");
      assert.deepEqual(listed.toSorted(byName), localTree(server.root).toSorted(byName));
      assert.deepEqual((await batch.list("a")).map((e) => e.name).toSorted(), ["b", "b/f10.img", "b/f14.img", "b/f18.img", "b/f2.img", "b/f6.img", "f1.img", "f13.img", "f17.img", "f5.img", "f9.img"].toSorted());

      // Pull it all back over the same connection.
      for (const sub of ["a/b", "c"]) fs.mkdirSync(path.join(back, sub), { recursive: true });
      await Promise.all(listed.filter((e) => e.kind === "file").map(async (e) => {
        const store = await openDestination(path.join(back, e.name), { create: true });
        try {
          await batch.sync(store, { mode: "pull", name: e.name, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      }));
      for (const f of spec) {
        const local = path.join(back, f.name);
        assert.equal(fileHash(local), fileHash(path.join(src, f.name)), f.name);
        assert.ok(allocatedBytesOf(local) <= allocatedBytesOf(path.join(src, f.name)) + 256 * 1024, `${f.name} is not sparse`);
      }
      await batch.close();
      // One connection, one handshake for all of it.
      assert.deepEqual(server.listener.counters, { connections: 1, handshakes: 1 });
      const fileLines = server.logs.filter((l) => /batch slot \d+ (push|pull) .*: ok/.test(l));
      assert.equal(fileLines.length, 40, server.logs.join("\n"));
      const slotsUsed = new Set(fileLines.map((l) => /batch slot (\d+)/.exec(l)![1]));
      assert.ok(slotsUsed.size >= 2, `only slots ${[...slotsUsed]} were used`);
      assert.ok(server.logs.some((l) => /batch of 4 slots: 40 files \(40 committed, 0 not\).*: ok/.test(l)), server.logs.join("\n"));
    } finally {
      await server.listener.close();
    }
  });
});

test("big files and refinement in several slots at once: identical, and only changed pages cross", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const src = path.join(dir, "src");
    const back = path.join(dir, "back");
    fs.mkdirSync(src);
    fs.mkdirSync(back);
    const names = ["big0", "big1", "s0", "s1", "s2", "s3"];
    for (const n of names) {
      const size = n.startsWith("big") ? 24 * MiB : 300_000;
      makeSparseFile(path.join(src, n), { size, chunks: [{ offset: 0, length: size, fill: "random" }] });
    }
    /** Writes 8 bytes every MiB from `from` on. */
    const scribble = (file: string, from: number, text: string) => {
      const fd = fs.openSync(file, "r+");
      try {
        for (let at = from; at < fs.fstatSync(fd).size; at += MiB) fs.writeSync(fd, new TextEncoder().encode(text), 0, 8, at);
      } finally {
        fs.closeSync(fd);
      }
    };
    try {
      const batch = await batchTo(server, key, dir, 4);
      const all = (mode: "push" | "pull", root: string) =>
        Promise.all(names.map(async (n) => {
          const store = mode === "push" ? await openSource(path.join(root, n)) : await openDestination(path.join(root, n), { create: true });
          try {
            return await batch.sync(store, { mode, name: n, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
          } finally {
            await store[Symbol.asyncDispose]();
          }
        }));
      await all("push", src);
      await all("pull", back);
      // Scattered changes on the listener, pulled (REFINE and SUB_DIGESTS in two pull slots at once)…
      for (const n of names) scribble(path.join(server.root, n), 8192, "changed!");
      const pulls = await all("pull", back);
      for (const n of names) assert.equal(fileHash(path.join(back, n)), fileHash(path.join(server.root, n)), n);
      const pulled = pulls.reduce((a, r) => a + r.local.bytesSent, 0);
      assert.ok(pulled <= 60 * 4096, `the pull sent ${pulled} bytes for 52 changed pages`);
      // …then on the source, pushed.
      for (const n of names) scribble(path.join(src, n), 3 * 4096, "source!!");
      const pushes = await all("push", src);
      for (const n of names) assert.equal(fileHash(path.join(server.root, n)), fileHash(path.join(src, n)), n);
      // The source never had the listener's changes: the push reverts those 52 pages and sends its own 52.
      const pushed = pushes.reduce((a, r) => a + r.local.bytesSent, 0);
      assert.ok(pushed <= 110 * 4096, `the push sent ${pushed} bytes for 104 changed pages`);
      await batch.close();
      assert.equal(server.listener.counters.handshakes, 1);
    } finally {
      await server.listener.close();
    }
  });
});

test("one failing file does not stop the others; pushes and pulls started together all run", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const local = path.join(dir, "local");
    fs.mkdirSync(local);
    for (const n of ["p1", "p2", "p3"]) makeSparseFile(path.join(local, n), { size: 300_000, chunks: [{ offset: 0, length: 200_000, seed: n.length }] });
    for (const n of ["q1", "q2"]) makeSparseFile(path.join(server.root, n), { size: 500_000, chunks: [{ offset: 65536, length: 100_000, seed: 7 }] });
    try {
      const batch = await batchTo(server, key, dir, 2);
      const push = async (file: string, name: string) => {
        const store = await openSource(path.join(local, file));
        try {
          return await batch.sync(store, { mode: "push", name, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      };
      const pull = async (name: string) => {
        const store = await openDestination(path.join(local, name), { create: true });
        try {
          return await batch.sync(store, { mode: "pull", name, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      };
      const results = await Promise.allSettled([
        push("p1", "p1"),
        push("p2", "missing/p2"), // OPEN never creates a folder: ENOENT
        pull("q1"),
        pull("nothing-here"), // ENOENT
        push("p3", "p3"),
        pull("q2"),
      ]);
      assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled", "fulfilled"]);
      for (const i of [1, 3]) assert.equal(((results[i] as PromiseRejectedResult).reason as { code?: string }).code, "ENOENT");
      for (const n of ["p1", "p3"]) assert.equal(fileHash(path.join(server.root, n)), fileHash(path.join(local, n)));
      for (const n of ["q1", "q2"]) assert.equal(fileHash(path.join(local, n)), fileHash(path.join(server.root, n)));
      assert.ok(!fs.existsSync(path.join(server.root, "missing")));
      // The batch is still good after the failures.
      assert.equal((await batch.list("")).filter((e) => e.kind === "file").length, 4);
      await batch.close();
      assert.equal(server.listener.counters.handshakes, 1);
    } finally {
      await server.listener.close();
    }
  });
});

test("a listener at its session caps answers BATCH with EBUSY; a batch is one session of them", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, maxSessionsPerKey: 1 });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    try {
      const first = await batchTo(server, key, dir, 8);
      assert.equal(first.slots, 8);
      assert.equal(server.listener.load.sessions, 1);
      await assert.rejects(batchTo(server, key, dir), (e: Error & { code?: string }) => e.name === "RemoteError" && e.code === "EBUSY");
      await first.close();
      const second = await batchTo(server, key, dir);
      await second.close();
    } finally {
      await server.listener.close();
    }
  });
});

test("the client's idle timeout: a batch quiet between files for 2.5 timeouts is not idle, a listener that owes a reply and is silent is", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const hostKey = generateKeyPair();
    // A listener that grants a batch, then never answers anything.
    const sockets = new Set<Socket>();
    const mute = createServer(async (socket) => {
      sockets.add(socket);
      socket.on("error", () => {});
      try {
        const conn = await acceptSecure(socket, { staticKey: hostKey, authorize: () => true, timeoutMs: 5000 });
        await conn.channel.receive();
        await conn.channel.send(encodeBatch({ type: "BATCH_OK", cookie: 0, slots: 1 }));
      } catch {
        socket.destroy();
      }
    });
    await new Promise<void>((resolve) => mute.listen(0, "127.0.0.1", resolve));
    try {
      const quiet = await dialBatch({
        host: "127.0.0.1",
        port: server.listener.port,
        staticKey: key,
        knownHostsFile: path.join(dir, "known_hosts"),
        acceptNew: true,
        idleTimeoutMs: 1000, // BATCH_OK must come within it, on a loaded machine too
      });
      await new Promise((resolve) => setTimeout(resolve, 2500));
      assert.equal(quiet.failure, undefined);
      assert.deepEqual(await quiet.list(""), []);
      await quiet.close();
      const silent = await dialBatch({
        host: "127.0.0.1",
        port: (mute.address() as { port: number }).port,
        staticKey: key,
        knownHostsFile: path.join(dir, "known_hosts"),
        acceptNew: true,
        idleTimeoutMs: 500,
      });
      const started = Date.now();
      await assert.rejects(silent.list(""), /idle timeout|sent nothing/);
      assert.ok(Date.now() - started < 5000);
      await silent[Symbol.asyncDispose]();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
      await server.listener.close();
    }
  });
});

test("LIST never walks into a symlinked folder; REMOVE and RMDIR remove what they name, never a file being written", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, lockWaitMs: 200 });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const outside = path.join(dir, "outside");
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "secret.img"), "secret");
    fs.mkdirSync(path.join(server.root, "d/e"), { recursive: true });
    fs.writeFileSync(path.join(server.root, "d/e/x"), "x");
    fs.writeFileSync(path.join(server.root, "d/y"), "yy");
    fs.symlinkSync(outside, path.join(server.root, "d/link"));
    fs.symlinkSync(outside, path.join(server.root, "top-link"));
    try {
      const batch = await batchTo(server, key, dir);
      const listed = await batch.list("");
      assert.deepEqual(listed.toSorted(byName), localTree(server.root).toSorted(byName));
      assert.deepEqual(listed.filter((e) => e.kind === "symlink").map((e) => e.name).toSorted(), ["d/link", "top-link"]);
      assert.ok(!listed.some((e) => e.name.includes("secret")), "LIST walked into a symlinked folder");
      await assert.rejects(batch.list("top-link"), (e: Error) => /symbolic link/.test(e.message));
      await batch.remove("d/e/x");
      await batch.rmdir("d/e");
      await assert.rejects(batch.rmdir("d"), (e: Error & { code?: string }) => e.code === "EEXIST");
      await assert.rejects(batch.remove("d/link"), (e: Error) => /symbolic link/.test(e.message));
      assert.deepEqual((await batch.list("d")).map((e) => e.name).toSorted(), ["link", "y"]);
      // REMOVE never takes a file from a writer: EBUSY while its lock is held (after the lock wait)…
      const writer = await openDestination(path.join(server.root, "d/y"), { create: false });
      try {
        await assert.rejects(batch.remove("d/y"), (e: Error & { code?: string }) => e.code === "EBUSY");
      } finally {
        await writer[Symbol.asyncDispose]();
      }
      // …nor a file an interrupted sync left a journal for.
      fs.writeFileSync(path.join(server.root, "d/.y.ssync-journal"), "");
      await assert.rejects(batch.remove("d/y"), (e: Error & { code?: string }) => e.code === "EBUSY" && /journal/.test(e.message));
      fs.rmSync(path.join(server.root, "d/.y.ssync-journal"));
      await batch.remove("d/y");
      assert.ok(!fs.existsSync(path.join(server.root, "d/y")));
      await batch.close();
      assert.ok(fs.existsSync(path.join(outside, "secret.img")));
      assert.equal(server.listener.counters.handshakes, 1);
    } finally {
      await server.listener.close();
    }
  });
});

test("an exported folder: LIST, MKDIR, push, pull, REMOVE and RMDIR under NAME/, never out of it", T, async () => {
  await withTempDir(async (dir) => {
    const vms = path.join(dir, "vms");
    const outside = path.join(dir, "outside");
    fs.mkdirSync(path.join(vms, "old"), { recursive: true });
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "x.img"), "outside");
    fs.symlinkSync(outside, path.join(vms, "link"));
    makeSparseFile(path.join(vms, "old", "a.img"), { size: 2 * MiB, chunks: [{ offset: MiB, length: 70_000 }] });
    const disk = path.join(dir, "disk.img");
    fs.writeFileSync(disk, "a file export");
    const server = await startListener(dir, { pool, exports: new Map([["vms", vms], ["disk", disk]]) });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const local = path.join(dir, "local");
    fs.mkdirSync(local);
    makeSparseFile(path.join(local, "b.img"), { size: 3 * MiB, chunks: [{ offset: 0, length: 100_000 }] });
    try {
      const batch = await batchTo(server, key, dir);
      assert.deepEqual((await batch.list("vms")).map((e) => `${e.kind} ${e.name}`).toSorted(), ["file old/a.img", "folder old", "symlink link"]);
      assert.deepEqual((await batch.list("vms/old")).map((e) => e.name), ["a.img"]);
      await batch.mkdir("vms/new");
      const sync = async (mode: "push" | "pull", file: string, name: string) => {
        const store = mode === "push" ? await openSource(file) : await openDestination(file, { create: true });
        try {
          return await batch.sync(store, { mode, name, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      };
      await sync("push", path.join(local, "b.img"), "vms/new/b.img");
      assert.equal(fileHash(path.join(vms, "new", "b.img")), fileHash(path.join(local, "b.img")));
      await sync("pull", path.join(local, "a.img"), "vms/old/a.img");
      assert.equal(fileHash(path.join(local, "a.img")), fileHash(path.join(vms, "old", "a.img")));
      // Never out of the folder, never through its links; the folder itself is not a file.
      for (const name of ["vms/../outside/x.img", "vms/link/x.img"]) {
        await assert.rejects(sync("push", path.join(local, "b.img"), name), (e: Error & { code?: string }) => e.code === "EACCES", name);
        await assert.rejects(batch.remove(name), (e: Error & { code?: string }) => e.code === "EACCES", name);
      }
      await assert.rejects(batch.mkdir("vms/link/sub"), (e: Error & { code?: string }) => e.code === "EACCES");
      await assert.rejects(batch.list("vms/link"), (e: Error & { code?: string }) => e.code === "EACCES");
      await assert.rejects(sync("push", path.join(local, "b.img"), "vms"), (e: Error & { code?: string }) => e.code === "EISDIR");
      for (const name of ["vms", "disk"]) {
        await assert.rejects(batch.remove(name), (e: Error & { code?: string }) => e.code === "EACCES", name);
        await assert.rejects(batch.rmdir(name), (e: Error & { code?: string }) => e.code === "EACCES", name);
      }
      await assert.rejects(batch.list("disk"), (e: Error & { code?: string }) => e.code === "EACCES");
      await batch.remove("vms/new/b.img");
      await batch.rmdir("vms/new");
      assert.deepEqual(fs.readdirSync(vms).toSorted(), ["link", "old"]);
      assert.equal(fs.readFileSync(path.join(outside, "x.img"), "utf8"), "outside");
      assert.deepEqual(fs.readdirSync(outside), ["x.img"]);
      await batch.close();
    } finally {
      await server.listener.close();
    }
  });
});

test("at start, a listener recovers the journals under its exported folders too (recoverTree)", T, async () => {
  await withTempDir(async (dir) => {
    const root = path.join(dir, "root");
    const vms = path.join(dir, "vms");
    fs.mkdirSync(root);
    fs.mkdirSync(path.join(vms, "sub"), { recursive: true });
    fs.writeFileSync(path.join(vms, "sub", "a.img"), "data");
    // An interrupted sync's journal that never reached its commit point: rolled back (removed).
    fs.writeFileSync(path.join(vms, "sub", ".a.img.ssync-journal"), "", { mode: 0o600 });
    const lines: string[] = [];
    await recoverTree(root, { exports: [vms], log: (m) => lines.push(m) });
    assert.deepEqual(fs.readdirSync(path.join(vms, "sub")), ["a.img"]);
    assert.equal(fs.readFileSync(path.join(vms, "sub", "a.img"), "utf8"), "data");
    assert.ok(lines.some((l) => l.includes("a.img")), lines.join("\n"));
  });
});

test("a listener that predates batches gets a clear error", T, async () => {
  await withTempDir(async (dir) => {
    const hostKey = generateKeyPair();
    // An old listener: the handshake, then serveSession on the connection (no BATCH).
    const sockets = new Set<Socket>();
    const old = createServer(async (socket) => {
      sockets.add(socket);
      socket.on("error", () => {});
      try {
        const conn = await acceptSecure(socket, { staticKey: hostKey, authorize: () => true, timeoutMs: 5000 });
        await serveSession(conn.channel, { pool, open: () => Promise.reject(new Error("nothing here")) });
        await conn[Symbol.asyncDispose]();
      } catch {
        socket.destroy();
      }
    });
    await new Promise<void>((resolve) => old.listen(0, "127.0.0.1", resolve));
    const port = (old.address() as { port: number }).port;
    try {
      await assert.rejects(
        dialBatch({
          host: "127.0.0.1",
          port,
          staticKey: generateKeyPair(),
          knownHostsFile: path.join(dir, "known_hosts"),
          acceptNew: true,
          timeoutMs: 5000,
          idleTimeoutMs: 10_000,
        }),
        (e: Error) => {
          assert.match(e.message, new RegExp(`^Cannot sync a folder with 127\\.0\\.0\\.1:${port}: the listener closed the connection at the start of a batch; it predates folders \\(protocol 2\\): upgrade it$`));
          return true;
        },
      );
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => old.close(() => resolve()));
    }
  });
});

test("ModeGate: a session waits for the other mode, and its wait leaves no abort listener on the connection's signal", async () => {
  const gate = new ModeGate();
  const controller = new AbortController();
  for (let i = 0; i < 1000; i++) {
    await gate.enter("push", controller.signal);
    let admitted = false;
    const pull = gate.enter("pull", controller.signal).then(() => (admitted = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(admitted, false, "a pull waits while a push runs");
    gate.leave(); // the push returns: the pull runs
    await pull;
    gate.leave();
  }
  assert.equal(getEventListeners(controller.signal, "abort").length, 0);
  // A wait the connection's end cuts short rejects with its reason.
  await gate.enter("push", controller.signal);
  const waiting = gate.enter("pull", controller.signal);
  controller.abort(new Error("gone"));
  await assert.rejects(waiting, /gone/);
});

/**
 * A hand-made hostile listener on 127.0.0.1 (real handshake): BATCH_OK, then each LIST on the
 * control stream is answered by `answer` with raw records (the slot prefix is added).
 */
async function hostileLister(answer: (send: (message: Uint8Array) => Promise<void>, cookie: number) => Promise<void>): Promise<{ port: number; close: () => Promise<void> }> {
  const hostKey = generateKeyPair();
  const sockets = new Set<Socket>();
  const server = createServer(async (socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    try {
      const conn = await acceptSecure(socket, { staticKey: hostKey, authorize: () => true, timeoutMs: 5000 });
      const open = decodeBatch((await conn.channel.receive())!);
      assert.equal(open.type, "BATCH");
      await conn.channel.send(encodeBatch({ type: "BATCH_OK", cookie: 0, slots: 1 }));
      for (;;) {
        const record = await conn.channel.receive();
        if (record === null) break;
        const m = decodeControl(record.subarray(2));
        if (m.type === "LIST") await answer((message) => conn.channel.send(slotRecord(0, message)), m.cookie);
      }
      await conn[Symbol.asyncDispose]();
    } catch {
      socket.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function batchToPort(port: number, dir: string): Promise<BatchClient> {
  return dialBatch({ host: "127.0.0.1", port, staticKey: generateKeyPair(), knownHostsFile: path.join(dir, "known_hosts"), acceptNew: true, timeoutMs: 5000, idleTimeoutMs: 10_000, slots: 1 });
}

test("a listener whose LIST never ends: the client refuses more than MAX_LIST_ENTRIES entries (its memory stays bounded)", T, async () => {
  await withTempDir(async (dir) => {
    // One chunk of 20,000 entries, encoded once, sent again and again without LAST.
    const entries: TreeEntry[] = [];
    for (let i = 0; i < 20_000; i++) entries.push({ kind: "file", size: 1, mtimeNs: 0n, name: `f${i}` });
    let sent = 0;
    const hostile = await hostileLister(async (send, cookie) => {
      const chunk = encodeControl({ type: "LIST_ENTRIES", cookie, last: false, entries });
      try {
        while (sent <= 2 * MAX_LIST_ENTRIES) {
          await send(chunk);
          sent += entries.length;
        }
        await send(encodeControl({ type: "LIST_ENTRIES", cookie, last: true, entries: [] })); // a client without the bound takes 2,000,000
      } catch { /* the client closed the connection */ }
    });
    try {
      const batch = await batchToPort(hostile.port, dir);
      try {
        const started = Date.now();
        await assert.rejects(batch.list(""), (e: Error) => {
          assert.match(e.message, new RegExp(`LIST_ENTRIES: more than ${MAX_LIST_ENTRIES} entries`));
          return true;
        });
        assert.ok(Date.now() - started < 30_000);
        assert.ok(sent <= MAX_LIST_ENTRIES + 20 * entries.length, `refused only after ${sent} entries`);
      } finally {
        await batch[Symbol.asyncDispose]().catch(() => {});
      }
    } finally {
      await hostile.close();
    }
  });
});

test("a listener's LIST naming ssync work files is refused (no such folder made); makeFolderUnder refuses those names too", T, async () => {
  await withTempDir(async (dir) => {
    const names = [".x.img.ssync-journal", "a/.x.img.ssync-partial", ".ssync-journal-0123456789abcdef0123456789abcdef", "b/.X.IMG.SSYNC-LOCK/c"];
    let asked = 0;
    const hostile = await hostileLister(async (send, cookie) => {
      const name = names[asked++ % names.length];
      await send(encodeControl({ type: "LIST_ENTRIES", cookie, last: true, entries: [{ kind: "folder", size: 0, mtimeNs: 0n, name }] }));
    });
    try {
      for (const name of names) {
        const batch = await batchToPort(hostile.port, dir);
        try {
          await assert.rejects(batch.list(""), (e: Error) => {
            assert.match(e.message, /names an ssync work file/, name);
            return true;
          });
        } finally {
          await batch[Symbol.asyncDispose]().catch(() => {});
        }
      }
    } finally {
      await hostile.close();
    }
    const local = path.join(dir, "local");
    fs.mkdirSync(path.join(local, "a"), { recursive: true });
    for (const name of [".x.img.ssync-journal", "a/.x.img.ssync-partial", ".x.img.ssync-lock"]) {
      assert.throws(() => makeFolderUnder(local, name, { mode: 0o755 }), /Cannot create the folder .*work files/, name);
    }
    assert.deepEqual(fs.readdirSync(local, { recursive: true }), ["a"], "no work-file folder made");
  });
});

/**
 * Issue 11's figure: 1,000 files of 4 KiB pushed in one batch to `ssync listen` in its own
 * process (client and listener do not share a CPU), over loopback. Printed, not asserted;
 * with SSYNC_BATCH_BENCH=1 only (tens of seconds on a loaded machine).
 */
test("batch-1000: 1,000 files of 4 KiB in one batch (printed, not asserted)", { ...T, skip: process.env.SSYNC_BATCH_BENCH ? false : "set SSYNC_BATCH_BENCH=1" }, async () => {
  await withTempDir(async (dir) => {
    const pair = await makeCliPair(dir, { keygen: false });
    const listener = await startCliListener(["--root", pair.root], { config: pair.server });
    const src = path.join(dir, "src");
    fs.mkdirSync(src);
    const names = Array.from({ length: 1000 }, (_, i) => `s${i}.img`);
    for (const [i, n] of names.entries()) makeSparseFile(path.join(src, n), { size: 4096, chunks: [{ offset: 0, length: 4096, seed: i + 1 }] });
    try {
      const slots = Number(process.env.SSYNC_BATCH_SLOTS ?? 8);
      // CPU seconds of the listener (from /proc) and of this process: what the time needs on an idle machine.
      const listenerCpu = () => {
        const fields = fs.readFileSync(`/proc/${listener.child.pid}/stat`, "utf8").split(") ")[1].split(" ");
        return (Number(fields[11]) + Number(fields[12])) / 100;
      };
      const cpu0 = { listener: listenerCpu(), client: process.cpuUsage() };
      const started = performance.now();
      const batch = await dialBatch({
        host: "127.0.0.1",
        port: listener.port,
        staticKey: pair.key!,
        knownHostsFile: path.join(dir, "known_hosts"),
        acceptNew: true,
        timeoutMs: 5000,
        idleTimeoutMs: 30_000,
        slots,
      });
      await Promise.all(names.map(async (n) => {
        const store = await openSource(path.join(src, n));
        try {
          await batch.sync(store, { mode: "push", name: n, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      }));
      await batch.close();
      const seconds = (performance.now() - started) / 1000;
      const clientCpu = process.cpuUsage(cpu0.client);
      console.log(
        `batch-1000: 1000 files of 4 KiB pushed in one batch (${batch.slots} slots) to ssync listen in ${seconds.toFixed(2)} s (target < 3 s); ` +
          `CPU: listener ${(listenerCpu() - cpu0.listener).toFixed(2)} s, client ${((clientCpu.user + clientCpu.system) / 1e6).toFixed(2)} s`,
      );
      for (const n of names) assert.equal(fs.readFileSync(path.join(pair.root, n)).length, 4096);
    } finally {
      await listener.stop();
    }
  });
});

test("100 files of 4 KiB in one batch, one handshake (timed, printed)", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const src = path.join(dir, "src");
    fs.mkdirSync(src);
    const names = Array.from({ length: 100 }, (_, i) => `s${i}.img`);
    for (const [i, n] of names.entries()) makeSparseFile(path.join(src, n), { size: 4096, chunks: [{ offset: 0, length: 4096, seed: i + 1 }] });
    try {
      const started = performance.now();
      const batch = await batchTo(server, key, dir, 8);
      await Promise.all(names.map(async (n) => {
        const store = await openSource(path.join(src, n));
        try {
          await batch.sync(store, { mode: "push", name: n, blockSize: 65536, hash: "poly1305", dryRun: false, pool });
        } finally {
          await store[Symbol.asyncDispose]();
        }
      }));
      await batch.close();
      const seconds = (performance.now() - started) / 1000;
      console.log(`100 files of 4 KiB in one batch (${batch.slots} slots, listener in this process): ${seconds.toFixed(2)} s`);
      for (const n of names) assert.equal(fileHash(path.join(server.root, n)), fileHash(path.join(src, n)));
      assert.deepEqual(server.listener.counters, { connections: 1, handshakes: 1 });
    } finally {
      await server.listener.close();
    }
  });
});
