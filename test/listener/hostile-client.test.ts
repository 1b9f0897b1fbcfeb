/**
 * Regressions from the security review of the listener and the server session:
 *
 * 1. An authenticated client (even a read-only key, in a dry run) that sends SIGS for many
 *    ranges and never RANGE_DONE must not grow the server's open ranges without bound: the
 *    session ends with a protocol error once the cap is passed.
 * 2. A client that stops reading while the server's sends are blocked (and every server task
 *    waits on one) must still hit the idle timeout: the session ends and frees its slot.
 * 3. Client-chosen names never put control characters (newlines) into the listener's log.
 * 4. A key that pairs while already listed in authorized_keys keeps its restrictions.
 * 5. A dry-run push to a missing file opens nothing and creates nothing.
 * 6. COMMIT's "every block covered" check cannot be met by closing one range twice.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE, MAX_RANGE_BLOCKS } from "../../protocol/constants.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { PairingOffer } from "../../src/trust/pairing-code.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { MAX_OPEN_RANGES, SERVER_TASKS } from "../../src/session/session-limits.ts";
import { RemoteError } from "../../src/util/errors.ts";
import { withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, startListener, waitFor } from "../helpers/network.ts";
import { rawConnect as connect, nextMessage as next, openMessage as open } from "../helpers/raw-client.ts";

const T = { timeout: 60_000 };
const BLOCK = 4096;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

test("a client cannot keep unbounded open ranges on the server (read-only key, dry run)", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key, { options: "read-only" });
      fs.writeFileSync(path.join(server.root, "t.img"), "");
      const conn = await connect(server, key, dir);
      try {
        const rangeBytes = MAX_RANGE_BLOCKS * BLOCK;
        const ranges = MAX_OPEN_RANGES + 1; // then silence: the server must end the session by itself
        await conn.channel.send(encode(open({ mode: "push", name: "t.img", size: ranges * rangeBytes, dryRun: true })));
        assert.equal((await next(conn))?.type, "OPEN_OK");
        // Many SIGS, never a RANGE_DONE: each would pin 256 KiB of digests on the server.
        for (let i = 0; i < ranges; i++) {
          await conn.channel.send(encode({ type: "SIGS", cookie: 100 + i, offset: i * rangeBytes, length: rangeBytes }));
        }
        let replies = 0;
        for (;;) {
          const m = await next(conn);
          if (m === null) break;
          assert.equal(m.type, "SIGS_REPLY");
          replies++;
        }
        assert.ok(replies <= MAX_OPEN_RANGES, `${replies} ranges were opened; the cap is ${MAX_OPEN_RANGES}`);
        await waitFor(() => server.logs.some((l) => /failed: .*open ranges/.test(l)), { timeoutMs: 5000, what: "the log line" });
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    } finally {
      await server.listener.close();
    }
  });
});

test("a client that stops reading still hits the idle timeout", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool, idleTimeoutMs: 1000 });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key, { options: "read-only" });
      const size = 16 << 20;
      fs.writeFileSync(path.join(server.root, "src.img"), randomBytes(size));
      const conn = await connect(server, key, dir);
      try {
        await conn.channel.send(encode(open({ mode: "pull", name: "src.img", size: 0, dryRun: false })));
        assert.equal((await next(conn))?.type, "OPEN_OK");
        // Every server task streams the whole file back; we never read a byte of it.
        conn.channel.socket.pause();
        const blocks = size / BLOCK;
        const digests = new Uint8Array(blocks * DIGEST_SIZE); // "all zero": every block differs
        for (let i = 0; i < SERVER_TASKS + 4; i++) {
          await conn.channel.send(encode({ type: "READ_DIFF", cookie: 10 + i, offset: 0, length: size, digests }));
        }
        await waitFor(() => server.listener.load.sessions === 1, { timeoutMs: 5000, what: "the session" });
        await waitFor(() => server.listener.load.sessions === 0, { timeoutMs: 10_000, what: "the idle timeout" });
        assert.ok(server.logs.some((l) => /idle timeout/.test(l)), server.logs.join("\n"));
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    } finally {
      await server.listener.close();
    }
  });
});

test("client-chosen names cannot forge lines in the listener's log", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const conn = await connect(server, key, dir);
      try {
        const name = "nope\n2099-01-01T00:00:00.000Z 10.0.0.1:1 key SHA256:x push \"evil\": ok\x1b[2K";
        await conn.channel.send(encode(open({ mode: "pull", name, size: 0, dryRun: false })));
        assert.equal((await next(conn))?.type, "ERROR");
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
      await waitFor(() => server.logs.some((l) => l.includes("nope")), { timeoutMs: 5000, what: "the log line" });
      for (const line of server.logs) assert.doesNotMatch(line, /[\x00-\x1f\x7f]/, JSON.stringify(line));
    } finally {
      await server.listener.close();
    }
  });
});

test("pairing with a key already in authorized_keys keeps its restrictions", T, async () => {
  await withTempDir(async (dir) => {
    const pairing = new PairingOffer();
    const server = await startListener(dir, { pool, pairing });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key, { options: "read-only" });
      const conn = await connect(server, key, dir, pairing.code);
      try {
        await conn.channel.send(encode(open({ mode: "push", name: "new.img", size: BLOCK, dryRun: false })));
        const reply = await next(conn);
        assert.equal(reply?.type, "ERROR");
        assert.equal(reply?.type === "ERROR" ? reply.code : undefined, "EROFS");
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
      assert.equal(fs.existsSync(path.join(server.root, "new.img")), false);
    } finally {
      await server.listener.close();
    }
  });
});

test("a dry-run push to a missing file creates nothing", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key, { options: "read-only" });
      fs.mkdirSync(path.join(server.root, "d"));
      const local = path.join(dir, "local.img");
      fs.writeFileSync(local, randomBytes(3 * BLOCK));
      const report = await clientSync(server, {
        mode: "push",
        local,
        name: "d/missing.img",
        key,
        pool,
        knownHosts: path.join(dir, "known_hosts"),
        dryRun: true,
        blockSize: BLOCK,
      });
      assert.equal(report.remoteSizeBefore, 0);
      assert.equal(report.local.blocksSent, 3);
      assert.deepEqual(fs.readdirSync(path.join(server.root, "d")), []);
      // A real push with that read-only key is still refused.
      await assert.rejects(
        clientSync(server, { mode: "push", local, name: "d/missing.img", key, pool, knownHosts: path.join(dir, "known_hosts") }),
        (e) => e instanceof RemoteError && /read-only/.test(e.message),
      );
    } finally {
      await server.listener.close();
    }
  });
});

test("COMMIT cannot be reached by covering one range twice and another never", T, async () => {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      fs.writeFileSync(path.join(server.root, "t.img"), "");
      const conn = await connect(server, key, dir);
      try {
        await conn.channel.send(encode(open({ mode: "push", name: "t.img", size: 2 * BLOCK, dryRun: true })));
        assert.equal((await next(conn))?.type, "OPEN_OK");
        const seen: string[] = [];
        for (const cookie of [10, 20]) {
          // The same first block twice; the second block never.
          await conn.channel.send(encode({ type: "SIGS", cookie, offset: 0, length: BLOCK }));
          const reply = await next(conn);
          if (reply === null) break;
          seen.push(reply.type);
          await conn.channel.send(encode({ type: "RANGE_DONE", cookie: cookie + 1, offset: 0, length: BLOCK }));
          const ack = await next(conn);
          if (ack === null) break;
          seen.push(ack.type);
        }
        await conn.channel.send(encode({ type: "COMMIT", cookie: 30, root: new Uint8Array(DIGEST_SIZE) })).catch(() => {});
        for (;;) {
          const m = await next(conn);
          if (m === null) break;
          seen.push(m.type);
        }
        assert.ok(!seen.includes("COMMIT_OK"), `the server answered ${seen.join(", ")}`);
        await waitFor(() => server.logs.some((l) => /already covered/.test(l)), { timeoutMs: 5000, what: "the log line" });
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    } finally {
      await server.listener.close();
    }
  });
});
