/**
 * A hostile batch client (spec "Batches", §7), speaking raw records over a real secure
 * connection to a real listener on 127.0.0.1:
 *
 * 1. "..", absolute and work-file names in LIST, MKDIR, REMOVE, RMDIR and in a slot's OPEN are
 *    refused with ERROR (the batch goes on); a NUL in a name is a violation; nothing is made
 *    outside the root.
 * 2. A symlinked folder on the listener: LIST, OPEN, MKDIR, REMOVE, RMDIR through it refused,
 *    nothing created or removed outside the root.
 * 3. A key restricted to path=a/ reaching ab/: LIST, MKDIR, OPEN, REMOVE all refused, nothing
 *    created; LIST of the root refused too (no name outside the prefix is ever sent).
 * 4. A read-only key: LIST yes, MKDIR, REMOVE, RMDIR refused (EROFS).
 * 5. A record on a slot not granted, a non-OPEN first record on a slot, a record without its
 *    slot, a control cookie used twice, an end of a free slot: the connection is closed, and
 *    the listener serves the next client. A v1 client is still served as before.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { decodeBatch, decodeControl, encodeBatch, encodeControl, slotEnd, slotRecord } from "../../protocol/batch-codec.ts";
import type { ControlMessage } from "../../protocol/batch-messages.ts";
import { decode, encode } from "../../protocol/codec.ts";
import { BATCH_VERSION, MAX_SLOTS } from "../../protocol/constants.ts";
import type { Message } from "../../protocol/messages.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import type { SecureConnection } from "../../src/net/secure-connection.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import { makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, startListener, type TestServer } from "../helpers/network.ts";
import { openMessage, rawConnect } from "../helpers/raw-client.ts";

const T = { timeout: 60_000 };

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** A raw batch: BATCH sent, BATCH_OK read. */
async function rawBatch(server: TestServer, key: KeyPair, dir: string, slots = 2): Promise<{ conn: SecureConnection; granted: number }> {
  const conn = await rawConnect(server, key, dir);
  await conn.channel.send(encodeBatch({ type: "BATCH", cookie: 0, version: BATCH_VERSION, slots }));
  const ok = decodeBatch((await conn.channel.receive())!);
  assert.equal(ok.type, "BATCH_OK");
  return { conn, granted: ok.slots };
}

/** The next record as (slot, message bytes; empty: the slot's end), or null once the connection is gone. */
async function nextRecord(conn: SecureConnection): Promise<{ slot: number; message: Uint8Array } | null> {
  try {
    const rec = await conn.channel.receive();
    return rec === null ? null : { slot: (rec[0] << 8) | rec[1], message: rec.subarray(2) };
  } catch {
    return null;
  }
}

let cookie = 100;
/** One control request and its final reply (LIST: the entries' names too). */
async function control(conn: SecureConnection, m: { type: "LIST" | "MKDIR" | "REMOVE" | "RMDIR"; name: string }): Promise<{ reply: ControlMessage; names: string[] }> {
  const c = cookie++;
  await conn.channel.send(slotRecord(0, encodeControl({ ...m, cookie: c })));
  const names: string[] = [];
  for (;;) {
    const r = await nextRecord(conn);
    assert.ok(r !== null, `the connection closed on ${m.type} ${m.name}`);
    assert.equal(r.slot, 0);
    const reply = decodeControl(r.message);
    assert.equal(reply.cookie, c);
    if (reply.type === "LIST_ENTRIES") {
      names.push(...reply.entries.map((e) => e.name));
      if (!reply.last) continue;
    }
    return { reply, names };
  }
}

/** A refusal: ERROR with one of `codes`. */
async function refused(conn: SecureConnection, m: { type: "LIST" | "MKDIR" | "REMOVE" | "RMDIR"; name: string }, codes: string[]): Promise<void> {
  const { reply, names } = await control(conn, m);
  assert.equal(reply.type, "ERROR", `${m.type} ${JSON.stringify(m.name)} was answered ${reply.type} (${names.join(", ")})`);
  if (reply.type === "ERROR") assert.ok(codes.includes(reply.code), `${m.type} ${m.name}: ${reply.code} ${reply.message}`);
}

/** OPEN on `slot` refused: ERROR, then the listener ends the slot; we end it too (it is free again). */
async function openRefused(conn: SecureConnection, slot: number, name: string, codes: string[]): Promise<void> {
  await conn.channel.send(slotRecord(slot, encode(openMessage({ mode: "push", name, size: 4096, dryRun: false }))));
  const r = await nextRecord(conn);
  assert.ok(r !== null && r.slot === slot, `no answer on slot ${slot} to OPEN ${name}`);
  const m = decode(r.message) as Message;
  assert.equal(m.type, "ERROR", `OPEN ${name} was answered ${m.type}`);
  if (m.type === "ERROR") assert.ok(codes.includes(m.code), `OPEN ${name}: ${m.code} ${m.message}`);
  const end = await nextRecord(conn);
  assert.ok(end !== null && end.slot === slot && end.message.length === 0, "the listener did not end the slot");
  await conn.channel.send(slotEnd(slot));
}

/** Every path under `dir`, relative (the client's known_hosts left out). */
function tree(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true, encoding: "utf8" }) as string[]).filter((p) => p !== "known_hosts").toSorted();
}

/** The listener still serves a batch: a LIST of the root answers. */
async function stillServes(server: TestServer, key: KeyPair, dir: string): Promise<void> {
  const { conn } = await rawBatch(server, key, dir);
  try {
    assert.equal((await control(conn, { type: "LIST", name: "" })).reply.type, "LIST_ENTRIES");
  } finally {
    await conn[Symbol.asyncDispose]().catch(() => {});
  }
}

test("'..', absolute and work-file names are refused in LIST, MKDIR, REMOVE, RMDIR and OPEN; NUL is a violation", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    fs.writeFileSync(path.join(dir, "victim"), "outside");
    fs.mkdirSync(path.join(server.root, "sub"));
    const before = tree(dir);
    try {
      const { conn, granted } = await rawBatch(server, key, dir);
      assert.equal(granted, 2);
      const bad = ["..", "../victim", "sub/../../victim", "/etc", "/etc/passwd", "sub/./x", "sub//x", ".x.ssync-partial", "sub/.y.ssync-journal"];
      for (const name of bad) {
        for (const type of ["LIST", "MKDIR", "REMOVE", "RMDIR"] as const) await refused(conn, { type, name }, ["EACCES", "EINVAL"]);
        await openRefused(conn, 1, name, ["EACCES", "EINVAL"]);
      }
      // The batch went on through all of that: a good request still works.
      assert.equal((await control(conn, { type: "MKDIR", name: "sub/made" })).reply.type, "ACK");
      // NUL cannot even be encoded as a name: a violation, the connection closes.
      const nul = encodeControl({ type: "MKDIR", cookie: 1, name: "sub/x" });
      nul[nul.length - 2] = 0;
      await conn.channel.send(slotRecord(0, nul));
      assert.equal(await nextRecord(conn), null);
      await conn[Symbol.asyncDispose]().catch(() => {});
      assert.deepEqual(tree(dir), [...before, path.join("root", "sub", "made")].toSorted());
      await stillServes(server, key, dir);
    } finally {
      await server.listener.close();
    }
  });
});

test("a symlinked folder on the listener: nothing goes through it", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const outside = path.join(dir, "outside");
    fs.mkdirSync(path.join(outside, "deep"), { recursive: true });
    fs.writeFileSync(path.join(outside, "file.img"), "outside");
    fs.symlinkSync(outside, path.join(server.root, "link"));
    const before = tree(outside);
    try {
      const { conn } = await rawBatch(server, key, dir);
      await refused(conn, { type: "LIST", name: "link" }, ["EACCES"]);
      await refused(conn, { type: "LIST", name: "link/deep" }, ["EACCES"]);
      await refused(conn, { type: "MKDIR", name: "link/new" }, ["EACCES"]);
      await refused(conn, { type: "MKDIR", name: "link" }, ["EACCES"]);
      await refused(conn, { type: "REMOVE", name: "link/file.img" }, ["EACCES"]);
      await refused(conn, { type: "REMOVE", name: "link" }, ["EACCES"]);
      await refused(conn, { type: "RMDIR", name: "link/deep" }, ["EACCES"]);
      await refused(conn, { type: "RMDIR", name: "link" }, ["EACCES"]);
      await openRefused(conn, 1, "link/new.img", ["EACCES"]);
      await openRefused(conn, 2, "link/file.img", ["EACCES"]);
      const root = await control(conn, { type: "LIST", name: "" });
      assert.deepEqual(root.names, ["link"]); // listed as what it is, never walked
      await conn[Symbol.asyncDispose]().catch(() => {});
      assert.deepEqual(tree(outside), before);
      assert.equal(fs.readFileSync(path.join(outside, "file.img"), "utf8"), "outside");
    } finally {
      await server.listener.close();
    }
  });
});

test("a key restricted to path=a/ cannot reach ab/ (or list the root)", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key, { options: "path=a/" });
    fs.mkdirSync(path.join(server.root, "a"));
    fs.mkdirSync(path.join(server.root, "ab"));
    fs.writeFileSync(path.join(server.root, "a", "mine.img"), "mine");
    fs.writeFileSync(path.join(server.root, "ab", "theirs.img"), "theirs");
    const before = tree(server.root);
    try {
      const { conn } = await rawBatch(server, key, dir);
      await refused(conn, { type: "LIST", name: "" }, ["EACCES"]);
      await refused(conn, { type: "LIST", name: "ab" }, ["EACCES"]);
      await refused(conn, { type: "MKDIR", name: "ab/new" }, ["EACCES"]);
      await refused(conn, { type: "MKDIR", name: "abc" }, ["EACCES"]);
      await refused(conn, { type: "REMOVE", name: "ab/theirs.img" }, ["EACCES"]);
      await refused(conn, { type: "RMDIR", name: "ab" }, ["EACCES"]);
      await openRefused(conn, 1, "ab/new.img", ["EACCES"]);
      await openRefused(conn, 1, "ab/theirs.img", ["EACCES"]);
      // Inside the prefix all is well.
      assert.deepEqual((await control(conn, { type: "LIST", name: "a" })).names, ["mine.img"]);
      await conn[Symbol.asyncDispose]().catch(() => {});
      assert.deepEqual(tree(server.root), before);
    } finally {
      await server.listener.close();
    }
  });
});

test("a read-only key may LIST, never MKDIR, REMOVE or RMDIR", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key, { options: "read-only" });
    fs.mkdirSync(path.join(server.root, "d"));
    fs.writeFileSync(path.join(server.root, "f.img"), "f");
    const before = tree(server.root);
    try {
      const { conn } = await rawBatch(server, key, dir);
      assert.deepEqual((await control(conn, { type: "LIST", name: "" })).names.toSorted(), ["d", "f.img"]);
      await refused(conn, { type: "MKDIR", name: "new" }, ["EROFS"]);
      await refused(conn, { type: "REMOVE", name: "f.img" }, ["EROFS"]);
      await refused(conn, { type: "RMDIR", name: "d" }, ["EROFS"]);
      await openRefused(conn, 1, "f.img", ["EROFS"]);
      await conn[Symbol.asyncDispose]().catch(() => {});
      assert.deepEqual(tree(server.root), before);
    } finally {
      await server.listener.close();
    }
  });
});

test("slot violations close the connection; the next client is served, a v1 client too", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    const open = encode(openMessage({ mode: "push", name: "x.img", size: 4096, dryRun: false }));
    const violations: [string, (conn: SecureConnection, granted: number) => Promise<void>][] = [
      ["a record on a slot not granted", (c, granted) => c.channel.send(slotRecord(granted + 1, open))],
      ["slot 65535", (c) => c.channel.send(slotRecord(0xffff, open))],
      ["a non-OPEN first record on a slot", (c) => c.channel.send(slotRecord(1, encode({ type: "SIGS", cookie: 2, offset: 0, length: 4096 })))],
      ["the end of a free slot", (c) => c.channel.send(slotEnd(1))],
      ["the end of the control stream", (c) => c.channel.send(slotEnd(0))],
      ["a record without its slot (1 byte)", (c) => c.channel.send(new Uint8Array([0]))],
      ["a NUL in an OPEN name", (c) => c.channel.send(slotRecord(1, encode(openMessage({ mode: "push", name: "x\0y.img", size: 4096, dryRun: false }))))],
      ["a v1 OPEN without its slot", (c) => c.channel.send(open)],
      ["a v1 message on the control stream", (c) => c.channel.send(slotRecord(0, open))],
      ["a control reply from the client", (c) => c.channel.send(slotRecord(0, encodeControl({ type: "ACK", cookie: 5 })))],
      ["BATCH again", (c) => c.channel.send(slotRecord(0, encodeBatch({ type: "BATCH", cookie: 0, version: BATCH_VERSION, slots: 1 })))],
      ["a control cookie still in flight", async (c) => {
        fs.mkdirSync(path.join(server.root, "many"), { recursive: true });
        for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(server.root, "many", `f${i}`), "");
        await c.channel.send(slotRecord(0, encodeControl({ type: "LIST", cookie: 9, name: "" })));
        await c.channel.send(slotRecord(0, encodeControl({ type: "LIST", cookie: 9, name: "" })));
      }],
      ["a record on a slot after its end", async (c) => {
        await c.channel.send(slotRecord(1, open));
        await c.channel.send(slotEnd(1));
        await c.channel.send(slotRecord(1, encode({ type: "FLUSH", cookie: 3 })));
      }],
    ];
    try {
      for (const [what, act] of violations) {
        const { conn, granted } = await rawBatch(server, key, dir);
        await act(conn, granted);
        // Whatever was answered first, the connection ends without END.
        for (;;) {
          const r = await nextRecord(conn);
          if (r === null) break;
          assert.ok(what.includes("cookie") || what.includes("after its end"), `${what}: answered on slot ${r.slot}`);
        }
        await conn[Symbol.asyncDispose]().catch(() => {});
        await stillServes(server, key, dir);
      }
      // A batch never grants more than MAX_SLOTS.
      const { conn, granted } = await rawBatch(server, key, dir, 1000);
      assert.equal(granted, MAX_SLOTS);
      await conn[Symbol.asyncDispose]().catch(() => {});
      // A v1 client (OPEN first) is served as before.
      const local = path.join(dir, "v1.img");
      makeSparseFile(local, { size: 1 << 20, chunks: [{ offset: 4096, length: 8192 }] });
      await clientSync(server, { mode: "push", local, name: "v1.img", key, pool, knownHosts: path.join(dir, "known_hosts") });
      assert.deepEqual(fs.readFileSync(path.join(server.root, "v1.img")), fs.readFileSync(local));
      assert.ok(!server.logs.some((l) => /internal error/.test(l)), server.logs.join("\n"));
    } finally {
      await server.listener.close();
    }
  });
});

test("a batch that sends nothing is closed by the idle timeout", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, idleTimeoutMs: 400 });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    try {
      const { conn } = await rawBatch(server, key, dir);
      const started = Date.now();
      assert.equal(await nextRecord(conn), null);
      const waited = Date.now() - started;
      assert.ok(waited >= 300 && waited < 10_000, `closed after ${waited} ms`);
      await conn[Symbol.asyncDispose]().catch(() => {});
      await stillServes(server, key, dir);
    } finally {
      await server.listener.close();
    }
  });
});

/** Open descriptors of this process (the listener runs in it). */
const descriptors = () => fs.readdirSync("/proc/self/fd").length;

test("LISTs that end early (a too-deep tree, a client that cuts) leave no descriptor behind", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    // deep/: 70 folders, more than MAX_LIST_DEPTH (EINVAL once 64 levels are open).
    let deep = path.join(server.root, "deep");
    for (let i = 0; i < 70; i++) deep = path.join(deep, "d");
    fs.mkdirSync(deep, { recursive: true });
    // wide/: 60 folders deep, then 3,000 long names: a LIST the client stops reading.
    let wide = path.join(server.root, "wide");
    for (let i = 0; i < 60; i++) wide = path.join(wide, "d");
    fs.mkdirSync(wide, { recursive: true });
    for (let i = 0; i < 3000; i++) fs.writeFileSync(path.join(wide, `${String(i).padStart(6, "0")}${"x".repeat(200)}`), "");
    try {
      fs.mkdirSync(path.join(server.root, "small"));
      const warm = await rawBatch(server, key, dir, 1); // the first connection's descriptors settle
      assert.equal((await control(warm.conn, { type: "LIST", name: "small" })).reply.type, "LIST_ENTRIES");
      await warm.conn[Symbol.asyncDispose]().catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
      const base = descriptors();
      {
        const { conn } = await rawBatch(server, key, dir, 1);
        for (let i = 0; i < 10; i++) await refused(conn, { type: "LIST", name: "deep" }, ["EINVAL"]);
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
      {
        const { conn } = await rawBatch(server, key, dir, 1);
        for (let i = 0; i < 8; i++) await conn.channel.send(slotRecord(0, encodeControl({ type: "LIST", cookie: 900 + i, name: "wide" })));
        const first = await nextRecord(conn); // the listener is walking
        assert.ok(first !== null && first.slot === 0);
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
      const deadline = Date.now() + 10_000;
      while ((server.listener.load.sessions > 0 || descriptors() > base + 2) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(server.listener.load.sessions, 0);
      assert.ok(descriptors() <= base + 2, `descriptors: ${base} before, ${descriptors()} after the LISTs`);
    } finally {
      await server.listener.close();
    }
  });
});

test("a record before OPEN's answer is a violation: a flood behind a session held at the mode gate cannot hold the batch past the idle timeout, nor lock the key out", T, async () => {
  await withTempDir(async (dir) => {
    const idleTimeoutMs = 1000;
    const server = await startListener(dir, { pool, idleTimeoutMs });
    const key = generateKeyPair();
    authorize(server.authorizedKeys, key);
    makeSparseFile(path.join(server.root, "p.img"), { size: 1 << 20, chunks: [] });
    const junk = new Uint8Array(60_000).fill(7);
    try {
      // As many as the key's session cap (8): each held would lock the key out.
      for (let n = 0; n < 8; n++) {
        const { conn } = await rawBatch(server, key, dir, 2);
        // Slot 1: a push whose session waits for records; slot 2: a pull held at the mode gate
        // (no OPEN_OK yet), then more than its slot's queue (SLOT_QUEUE_BYTES) of junk records.
        await conn.channel.send(slotRecord(1, encode(openMessage({ mode: "push", name: `new${n}.img`, size: 1 << 20, dryRun: false }))));
        assert.equal(decode((await nextRecord(conn))!.message).type, "OPEN_OK");
        await conn.channel.send(slotRecord(2, encode(openMessage({ mode: "pull", name: "p.img", size: 0, dryRun: false }))));
        const started = Date.now();
        const sends: Promise<void>[] = [];
        for (let i = 0; i < 90; i++) sends.push(conn.channel.send(slotRecord(2, junk)));
        await Promise.allSettled(sends);
        // No answer on slot 2, and the connection ends well within the idle timeout.
        const deadline = started + idleTimeoutMs + 2000;
        let closed = false;
        while (!closed && Date.now() < deadline) {
          const r = await Promise.race([nextRecord(conn), new Promise<"late">((resolve) => setTimeout(() => resolve("late"), deadline - Date.now()))]);
          if (r === "late") break;
          if (r === null) closed = true;
          else assert.notEqual(r.slot, 2, "the held pull was answered");
        }
        assert.ok(closed, `connection ${n} still open ${Date.now() - started} ms after the flood (idle timeout ${idleTimeoutMs} ms)`);
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
      const deadline = Date.now() + 5000;
      while (server.listener.load.sessions > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(server.listener.load.sessions, 0);
      assert.ok(server.logs.some((l) => /before its OPEN was answered/.test(l)), server.logs.join("\n"));
      // The key is not locked out.
      const local = path.join(dir, "after.img");
      makeSparseFile(local, { size: 1 << 20, chunks: [{ offset: 0, length: 4096 }] });
      await clientSync(server, { mode: "push", local, name: "after.img", key, pool, knownHosts: path.join(dir, "known_hosts") });
      assert.deepEqual(fs.readFileSync(path.join(server.root, "after.img")), fs.readFileSync(local));
    } finally {
      await server.listener.close();
    }
  });
});
