/**
 * The server session's rules (spec §5), each against a real file through serveSession,
 * driven by a hand-written client that sends what an honest one never would:
 *
 * (d) RANGE_DONE names exactly the offset and length of its SIGS range;
 * (e) COMMIT with uncovered blocks or open ranges answers ERROR EBADMSG and the session goes
 *     on; a range overlapping one claimed before (open or closed) is a violation on arrival;
 * (f) DATA, ZERO and RANGE_DONE are valid only once SIGS_REPLY was sent for their range, a
 *     write lies inside an open range and writes each block once; FLUSH is optional;
 * (g) a request whose cookie is still in flight is a violation;
 * (h) a pull server sends zstd DATA only to a client that set OPEN_CLIENT_ZSTD (on every DATA
 *     with OPEN_COMPRESS_ALWAYS; over a link that never backs up, none without it);
 * (i) a violation closes the connection: no ERROR, no END (over TCP: EOF without END);
 * and the session's bounds and reports: at most PULL_TASKS READ_DIFFs at once, the
 * listener-wide budget given back at the end, the first cause reported (ENOSPC, not the
 * broken pipe after it), a dry-run FLUSH that does not count as activity.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { decode, ProtocolError } from "../protocol/codec.ts";
import { DIGEST_SIZE, MAX_RANGE_BLOCKS, MAX_RECORD, RECORD_WORD_SIZE, TAG_SIZE } from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";
import { RootHash } from "../src/engine/root-hash.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import type { RecordChannel } from "../src/net/record-channel.ts";
import { joinRecord } from "../src/util/record-parts.ts";
import { runClient } from "../src/session/client-session.ts";
import { memoryPair } from "../src/session/memory-pair.ts";
import { PULL_TASKS, RANGES_IN_FLIGHT, SLOT_BUFFER_BYTES } from "../src/session/session-limits.ts";
import { JOB_BYTES } from "../src/engine/scan-job.ts";
import { openSource } from "../src/storage/open-source.ts";
import type { Storage } from "../src/storage/storage.ts";
import { ByteWindow } from "../src/util/byte-window.ts";
import { ErrnoError, RemoteError } from "../src/util/errors.ts";
import { Driver, openRequest, serveFile, tcpChannelPair } from "./helpers/session-driver.ts";
import { makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 20_000 };
const BS = 4096;
const KEY = new Uint8Array(32).fill(3);

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** A dry-run (unless said otherwise) push session on a file of `blocks` data blocks. */
async function push(dir: string, o: { blocks: number; dryRun?: boolean }) {
  const file = path.join(dir, "dst.img");
  makeSparseFile(file, { size: o.blocks * BS, chunks: [{ offset: 0, length: o.blocks * BS, seed: 5 }] });
  const served = serveFile(file, { pool });
  const { driver } = served;
  assert.ok(await driver.send(openRequest({ mode: "push", size: o.blocks * BS, dryRun: o.dryRun ?? true, key: KEY })));
  await driver.expect("OPEN_OK");
  return { ...served, file };
}

const types = (ms: Message[]) => ms.map((m) => m.type);

/** The session closed the connection for a violation: no ERROR, no END, a ProtocolError reported. */
async function assertClosed(s: { driver: Driver; result: Promise<{ error: Error | undefined; committed: boolean }> }, what: string, notAnswered: number[] = []) {
  const { messages, end } = await s.driver.drain();
  assert.equal(end, "CLOSED", `${what}: the connection is closed, not ended (${types(messages)})`);
  assert.ok(!messages.some((m) => m.type === "ERROR"), `${what}: a violation gets no ERROR (${types(messages)})`);
  for (const cookie of notAnswered) assert.ok(!messages.some((m) => m.cookie === cookie), `${what}: cookie ${cookie} got ${types(messages)}`);
  const result = await s.result;
  assert.ok(result.error instanceof ProtocolError, `${what}: ${result.error}`);
  assert.equal(result.committed, false);
  return result.error;
}

describe("server session rules", () => {
  test("(d) RANGE_DONE that does not name its SIGS range exactly is a violation", T, async () => {
    await withTempDir(async (dir) => {
      const s = await push(dir, { blocks: 3 });
      await s.driver.send({ type: "SIGS", cookie: 2, offset: 0, length: 3 * BS });
      await s.driver.expect("SIGS_REPLY");
      await s.driver.send({ type: "RANGE_DONE", cookie: 3, offset: 0, length: BS });
      await s.driver.send({ type: "COMMIT", cookie: 4, root: new Uint8Array(16) });
      const e = await assertClosed(s, "RANGE_DONE 0+4096 after SIGS 0+12288", [3, 4]);
      assert.match(e.message, /open range is \[0, 12288\)/);
    });
  });

  test("(e) COMMIT with uncovered blocks or open ranges answers ERROR EBADMSG, and the session goes on", T, async () => {
    await withTempDir(async (dir) => {
      const s = await push(dir, { blocks: 3 });
      const d = s.driver;
      await d.send({ type: "SIGS", cookie: 2, offset: 0, length: BS });
      await d.expect("SIGS_REPLY");
      await d.send({ type: "RANGE_DONE", cookie: 3, offset: 0, length: BS });
      await d.expect("ACK");
      await d.send({ type: "COMMIT", cookie: 4, root: new Uint8Array(16) });
      const uncovered = await d.expect("ERROR");
      assert.deepEqual([uncovered.cookie, uncovered.code], [4, "EBADMSG"]);
      assert.match(uncovered.message, /1 of 3 blocks/);
      await d.send({ type: "SIGS", cookie: 5, offset: BS, length: 2 * BS });
      await d.expect("SIGS_REPLY");
      await d.send({ type: "COMMIT", cookie: 6, root: new Uint8Array(16) });
      const open = await d.expect("ERROR");
      assert.deepEqual([open.cookie, open.code], [6, "EBADMSG"]);
      assert.match(open.message, /1 ranges are still open/);
      await d.send({ type: "RANGE_DONE", cookie: 7, offset: BS, length: 2 * BS });
      await d.expect("ACK");
      await d.send({ type: "COMMIT", cookie: 8, root: new Uint8Array(16) });
      await d.expect("COMMIT_OK");
      d.channel.close();
      assert.equal((await s.result).committed, true);
    });
  });

  test("(e) a range overlapping one claimed before is a violation on arrival (push and pull)", T, async () => {
    await withTempDir(async (dir) => {
      // Still open (its SIGS still being answered).
      let s = await push(dir, { blocks: 64 });
      await s.driver.send({ type: "SIGS", cookie: 2, offset: 0, length: 32 * BS });
      await s.driver.send({ type: "SIGS", cookie: 3, offset: 16 * BS, length: 32 * BS });
      await assertClosed(s, "SIGS overlapping an open range", [3]);
      // Long closed.
      s = await push(dir, { blocks: 4 });
      await s.driver.send({ type: "SIGS", cookie: 2, offset: 0, length: 2 * BS });
      await s.driver.expect("SIGS_REPLY");
      await s.driver.send({ type: "RANGE_DONE", cookie: 3, offset: 0, length: 2 * BS });
      await s.driver.expect("ACK");
      await s.driver.send({ type: "SIGS", cookie: 4, offset: BS, length: 2 * BS });
      await assertClosed(s, "SIGS overlapping a closed range", [4]);
      // Pull: the second READ_DIFF gets no reply at all, not even DATA.
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 64 * BS, chunks: [{ offset: 0, length: 64 * BS, seed: 9 }] });
      const p = serveFile(src, { pool });
      await p.driver.send(openRequest({ mode: "pull", size: 0, key: KEY }));
      await p.driver.expect("OPEN_OK");
      const digests = new Uint8Array(32 * DIGEST_SIZE);
      await p.driver.send({ type: "READ_DIFF", cookie: 2, offset: 0, length: 32 * BS, digests });
      await p.driver.send({ type: "READ_DIFF", cookie: 3, offset: 31 * BS, length: 32 * BS, digests });
      await assertClosed(p, "READ_DIFF overlapping one in flight", [3]);
    });
  });

  test("(f) DATA, ZERO and RANGE_DONE before their range's SIGS_REPLY, outside it, or twice on a block are violations", T, async () => {
    await withTempDir(async (dir) => {
      const cases: { what: string; then: Message[]; waitReply: boolean }[] = [
        { what: "ZERO pipelined before SIGS_REPLY", waitReply: false, then: [{ type: "ZERO", cookie: 3, offset: 0, length: BS }] },
        {
          what: "DATA pipelined before SIGS_REPLY",
          waitReply: false,
          then: [{ type: "DATA", cookie: 3, offset: 0, length: BS, payload: new Uint8Array(BS).fill(1), zstd: false }],
        },
        { what: "RANGE_DONE pipelined before SIGS_REPLY", waitReply: false, then: [{ type: "RANGE_DONE", cookie: 3, offset: 0, length: 32 * BS }] },
        { what: "ZERO outside the open range", waitReply: true, then: [{ type: "ZERO", cookie: 3, offset: 32 * BS, length: BS }] },
        { what: "ZERO across the end of the open range", waitReply: true, then: [{ type: "ZERO", cookie: 3, offset: 31 * BS, length: 2 * BS }] },
        {
          what: "a block written twice",
          waitReply: true,
          then: [{ type: "ZERO", cookie: 3, offset: 4 * BS, length: BS }, { type: "ZERO", cookie: 4, offset: 0, length: 8 * BS }],
        },
      ];
      for (const c of cases) {
        const s = await push(dir, { blocks: 64 });
        await s.driver.send({ type: "SIGS", cookie: 2, offset: 0, length: 32 * BS });
        if (c.waitReply) await s.driver.expect("SIGS_REPLY");
        for (const m of c.then) await s.driver.send(m);
        const last = c.then[c.then.length - 1].cookie;
        await assertClosed(s, c.what, [last]);
      }
    });
  });

  test("(f) FLUSH is optional: COMMIT commits the destination itself", T, async () => {
    await withTempDir(async (dir) => {
      const blocks = 8;
      const s = await push(dir, { blocks, dryRun: false });
      await s.driver.send({ type: "SIGS", cookie: 2, offset: 0, length: blocks * BS });
      const reply = await s.driver.expect("SIGS_REPLY");
      await s.driver.send({ type: "RANGE_DONE", cookie: 3, offset: 0, length: blocks * BS });
      await s.driver.expect("ACK");
      // The source is identical: its root is the one of the destination's digests.
      const root = new RootHash(KEY);
      root.add(0, reply.digests);
      const commitsBefore = s.store()!.commits;
      await s.driver.send({ type: "COMMIT", cookie: 4, root: root.finish(blocks * BS, BS) });
      await s.driver.expect("COMMIT_OK");
      assert.equal(s.store()!.commits, commitsBefore + 1, "COMMIT committed the destination");
      s.driver.channel.close();
      assert.equal((await s.result).committed, true);
    });
  });

  test("(g) a request whose cookie is still in flight is a violation; once answered, the cookie is free", T, async () => {
    await withTempDir(async (dir) => {
      const s = await push(dir, { blocks: 64 });
      await s.driver.send({ type: "SIGS", cookie: 5, offset: 0, length: BS });
      await s.driver.expect("SIGS_REPLY");
      await s.driver.send({ type: "RANGE_DONE", cookie: 5, offset: 0, length: BS });
      await s.driver.expect("ACK");
      await s.driver.send({ type: "SIGS", cookie: 9, offset: BS, length: 32 * BS });
      await s.driver.send({ type: "SIGS", cookie: 9, offset: 33 * BS, length: 31 * BS });
      const { messages } = await s.driver.drain().then((r) => (assert.equal(r.end, "CLOSED"), r));
      assert.ok(messages.filter((m) => m.type === "SIGS_REPLY").length <= 1, `${types(messages)}`);
      assert.match((await s.result).error!.message, /cookie 9 is already in flight/);
    });
  });

  test("(h) a pull server sends zstd DATA only to a client that set OPEN_CLIENT_ZSTD (always: every DATA)", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: 64 * BS, chunks: [{ offset: 0, length: 64 * BS, fill: 7 }] }); // very compressible
      // The memory pair never backs up: without OPEN_COMPRESS_ALWAYS ("auto"), nothing is compressed.
      const cases = [
        { clientZstd: false, compressAlways: true, zstd: false },
        { clientZstd: true, compressAlways: true, zstd: true },
        { clientZstd: true, compressAlways: false, zstd: false },
      ];
      for (const { clientZstd, compressAlways, zstd } of cases) {
        const p = serveFile(src, { pool });
        await p.driver.send(openRequest({ mode: "pull", size: 0, key: KEY, clientZstd, ...(compressAlways ? { compressAlways } : {}) }));
        await p.driver.expect("OPEN_OK");
        await p.driver.send({ type: "READ_DIFF", cookie: 2, offset: 0, length: 64 * BS, digests: new Uint8Array(64 * DIGEST_SIZE) });
        const data: boolean[] = [];
        for (let m = await p.driver.next(); typeof m !== "string" && m.type !== "RANGE_DONE"; m = await p.driver.next()) {
          if (m.type === "DATA") data.push(m.zstd);
        }
        assert.ok(data.length > 0);
        assert.ok(data.every((z) => z === zstd), `clientZstd ${clientZstd}, compressAlways ${compressAlways}: zstd flags ${data}`);
        p.driver.channel.close();
        await p.result;
      }
    });
  });

  test("(i) a violation closes the connection: over TCP the peer reads EOF without END", T, async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, "dst.img");
      makeSparseFile(file, { size: 4 * BS });
      const [client, server] = await tcpChannelPair();
      const s = serveFile(file, { pool, channels: [client, server] });
      await s.driver.send(openRequest({ mode: "push", size: 4 * BS, dryRun: true }));
      await s.driver.expect("OPEN_OK");
      await s.driver.send({ type: "ACK", cookie: 2 }); // not a request
      await assert.rejects(client.receive(), /without an END record/);
      assert.ok((await s.result).error instanceof ProtocolError);
    });
  });
});

/**
 * A channel whose sends never complete (a peer that reads nothing), recording each record
 * it was asked to send; closing it (with a reason) rejects them.
 */
function stalled(inner: RecordChannel): RecordChannel & { attempted: Message[] } {
  const attempted: Message[] = [];
  const pending: ((e: Error) => void)[] = [];
  let closed: Error | undefined;
  return {
    attempted,
    send(record) {
      if (closed) return Promise.reject(closed);
      attempted.push(decode(joinRecord(record)));
      if (attempted.length === 1) return inner.send(record); // OPEN_OK goes through
      return new Promise<void>((_, reject) => pending.push(reject));
    },
    receive: () => inner.receive(),
    close(reason) {
      closed ??= reason ?? new Error("closed");
      for (const r of pending.splice(0)) r(closed);
      inner.close(reason);
    },
    [Symbol.asyncDispose]: () => inner[Symbol.asyncDispose](),
  };
}

async function settle(check: () => number): Promise<number> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const now = check();
    if (now === last && now > 0) return now;
    last = now;
  }
  return last;
}

describe("server session bounds and reports", () => {
  test("a pull server's job reservation fits in a batch slot's window beside the digests of an honest client's ranges", () => {
    // A READ_DIFF task holds its request's and its own digests for its whole life; a job of
    // its range reserves its result and the records it becomes, (1 + targets) × the job's
    // data (source-side.ts: ≤ JOB_BYTES for a reserving caller). A reservation that cannot fit
    // beside its own task's hold waits forever: with 4 MiB jobs it was 8 MiB, the whole slot.
    const digests = RANGES_IN_FLIGHT * 2 * MAX_RANGE_BLOCKS * DIGEST_SIZE;
    assert.ok(digests + 2 * JOB_BYTES <= SLOT_BUFFER_BYTES, `${digests} + ${2 * JOB_BYTES} > ${SLOT_BUFFER_BYTES}`);
  });

  test("a pull server works on at most PULL_TASKS READ_DIFFs at once and holds the listener's budget only meanwhile", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const ranges = 64;
      makeSparseFile(src, { size: ranges * 16 * BS, chunks: [{ offset: 0, length: ranges * 16 * BS, fill: "random" }] });
      const [clientEnd, serverEnd] = memoryPair();
      const server = stalled(serverEnd);
      const budget = 256 << 20;
      const memory = new ByteWindow(budget);
      const p = serveFile(src, { pool, channels: [clientEnd, server], memory });
      await p.driver.send(openRequest({ mode: "pull", size: 0, key: KEY }));
      await p.driver.expect("OPEN_OK");
      for (let i = 0; i < ranges; i++) {
        await p.driver.send({ type: "READ_DIFF", cookie: 10 + i, offset: i * 16 * BS, length: 16 * BS, digests: new Uint8Array(16 * DIGEST_SIZE) });
      }
      await settle(() => server.attempted.length);
      const started = new Set(server.attempted.slice(1).map((m) => m.cookie));
      assert.ok(started.size > 0 && started.size <= PULL_TASKS, `${started.size} READ_DIFFs answered at once; the bound is ${PULL_TASKS}`);
      // Job results waiting to be sent hold part of the listener's budget...
      const all = memory.acquire(budget);
      assert.equal(await Promise.race([all.then(() => "acquired"), new Promise((r) => setTimeout(() => r("waiting"), 200))]), "waiting");
      // ...and every byte comes back when the session ends, however it ends: here the
      // connection breaks (its pending sends reject, as a socket's do).
      server.close(new Error("the connection broke"));
      await p.result;
      assert.equal(await Promise.race([all.then(() => "acquired"), new Promise((r) => setTimeout(() => r("waiting"), 2000))]), "acquired");
    });
  });

  test("the record channel waits for 'drain' BEFORE writing once the socket holds more than maxUnsentBytes", T, async () => {
    const maxUnsentBytes = 1 << 20;
    const [a, b] = await tcpChannelPair({ maxUnsentBytes });
    try {
      b.socket.pause(); // the peer reads nothing
      const record = new Uint8Array(MAX_RECORD).fill(1);
      let written = 0;
      const sends = Array.from({ length: 48 }, () => a.send(record).then(() => void written++));
      await settle(() => written);
      const frame = RECORD_WORD_SIZE + MAX_RECORD + TAG_SIZE;
      assert.ok(a.socket.writableLength <= maxUnsentBytes + frame, `the socket holds ${a.socket.writableLength} bytes`);
      assert.ok(written < sends.length, "the other sends wait");
      b.socket.resume();
      for (let i = 0; i < sends.length; i++) assert.equal((await b.receive())?.length, MAX_RECORD);
      await Promise.all(sends);
    } finally {
      a.close();
      b.close();
    }
  });

  test("the session reports its first cause: ENOSPC, not the broken pipe that follows (over TCP)", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: 8 << 20, chunks: [{ offset: 0, length: 8 << 20, fill: "random" }] });
      let room = 1 << 20;
      /** A disk with 1 MiB free: writes past that fail as a full filesystem does. */
      const fullDisk = (store: Storage): Storage =>
        new Proxy(store, {
          get(target, prop) {
            if (prop === "write") {
              return (buf: Uint8Array, pos: number) => {
                room -= buf.length;
                return room < 0 ? Promise.reject(new ErrnoError("ENOSPC", `Cannot write ${target.path}: no space left on device`)) : target.write(buf, pos);
              };
            }
            const v = Reflect.get(target, prop, target);
            return typeof v === "function" ? v.bind(target) : v;
          },
        });
      const [client, server] = await tcpChannelPair();
      const s = serveFile(dst, { pool, channels: [client, server], wrap: fullDisk });
      const source = await openSource(src);
      try {
        await assert.rejects(
          runClient(client, source, { mode: "push", name: "dst.img", blockSize: 65536, hash: "hmac-sha256", dryRun: false, pool }),
          (e) => e instanceof RemoteError && e.code === "ENOSPC",
        );
      } finally {
        await source[Symbol.asyncDispose]();
        client.close(new Error("test over"));
      }
      const result = await s.result;
      assert.equal((result.error as ErrnoError | undefined)?.code, "ENOSPC", `reported: ${result.error?.message}`);
    });
  });

  test("a dry-run FLUSH is no activity: the idle clock is not reset by it", T, async () => {
    await withTempDir(async (dir) => {
      for (const dryRun of [true, false]) {
        const file = path.join(dir, `f${dryRun}.img`);
        makeSparseFile(file, { size: 4 * BS });
        let ignored = 0;
        const activity = { begin() {}, end() {}, ignoreLastRecord: () => void ignored++ };
        const s = serveFile(file, { pool, activity });
        await s.driver.send(openRequest({ mode: "push", size: 4 * BS, dryRun }));
        await s.driver.expect("OPEN_OK");
        for (const cookie of [2, 3]) {
          await s.driver.send({ type: "FLUSH", cookie });
          await s.driver.expect("ACK");
        }
        assert.equal(ignored, dryRun ? 2 : 0, `dry run ${dryRun}`);
        s.driver.channel.close();
        await s.result;
        fs.rmSync(file);
      }
    });
  });
});
