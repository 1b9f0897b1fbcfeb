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
 * 7. A read-only key cannot kill the listener process: a dry-run push that fills the
 *    session's task slots with SIGS, then sends RANGE_DONE for a range never opened (or two
 *    RANGE_DONEs back to back), ends its own session only; the next client is served.
 * 8. A read-only key cannot exhaust the listener's memory: pull sessions that ask for more
 *    than they read keep the listener's RSS (from /proc) within the stated per-session bound.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { decode, encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE, MAX_RANGE_BLOCKS } from "../../protocol/constants.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { PairingOffer } from "../../src/trust/pairing-code.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { MAX_OPEN_RANGES, PULL_TASKS, SERVER_TASKS, SESSION_MEMORY_BYTES } from "../../src/session/session-limits.ts";
import type { SecureConnection } from "../../src/net/secure-connection.ts";
import type { KeyPair } from "../../src/noise/x25519.ts";
import { RemoteError } from "../../src/util/errors.ts";
import { fileHash, withTempDir } from "../helpers/sparse.ts";
import { authorize, type CliListener, clientSync, startCliListener, startListener, waitFor } from "../helpers/network.ts";
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
        // Every server task streams its range back; we never read a byte of it.
        conn.channel.socket.pause();
        const ranges = PULL_TASKS + 4;
        const length = size / ranges - ((size / ranges) % BLOCK);
        const digests = new Uint8Array((length / BLOCK) * DIGEST_SIZE); // "all zero": every block differs
        for (let i = 0; i < ranges; i++) {
          await conn.channel.send(encode({ type: "READ_DIFF", cookie: 10 + i, offset: i * length, length, digests }));
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
      // deno-lint-ignore no-control-regex
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

/** A `scripts/ssync listen --root ROOT ARGS` child whose authorized_keys lists `key` read-only. */
async function withCliListener(
  args: string[],
  body: (s: { dir: string; root: string; key: KeyPair; cli: CliListener; server: { listener: { port: number; address: string } } }) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const config = path.join(dir, "server-config");
    const root = path.join(dir, "root");
    fs.mkdirSync(root);
    fs.mkdirSync(path.join(config, "ssync"), { recursive: true, mode: 0o700 });
    const key = generateKeyPair();
    authorize(path.join(config, "ssync", "authorized_keys"), key, { options: "read-only" });
    const cli = await startCliListener(["--root", root, ...args], { config });
    try {
      const server = { listener: { port: cli.port, address: `127.0.0.1:${cli.port}` } };
      await body({ dir, root, key, cli, server });
    } finally {
      await cli.stop();
    }
  });
}

/** Reads until the server ends the session: the types it sent, and how it ended (END, or EOF without it). */
async function drain(conn: SecureConnection): Promise<{ seen: string[]; end: "END" | "EOF" }> {
  const seen: string[] = [];
  for (;;) {
    let rec: Uint8Array | null;
    try {
      rec = await conn.channel.receive();
    } catch {
      return { seen, end: "EOF" };
    }
    if (rec === null) return { seen, end: "END" };
    seen.push(decode(rec).type);
  }
}

test("a read-only key cannot kill the listener: RANGE_DONE for no open range while every task slot is busy", T, async () => {
  await withCliListener(["--read-only"], async ({ dir, root, key, cli, server }) => {
    const rangeBytes = 1 << 20;
    const size = SERVER_TASKS * rangeBytes;
    fs.writeFileSync(path.join(root, "data.img"), randomBytes(size));
    const attacks: { what: string; records: (m: { size: number }) => Uint8Array[]; waitFirst?: boolean }[] = [
      {
        what: "SIGS over data in every task slot, then RANGE_DONE for a range never opened",
        records: () => [
          ...Array.from({ length: SERVER_TASKS }, (_, i) => encode({ type: "SIGS", cookie: 100 + i, offset: i * rangeBytes, length: rangeBytes })),
          encode({ type: "RANGE_DONE", cookie: 99, offset: size - rangeBytes, length: rangeBytes }),
        ],
      },
      {
        what: "two RANGE_DONEs back to back",
        records: () => [
          encode({ type: "RANGE_DONE", cookie: 7, offset: 0, length: rangeBytes }),
          encode({ type: "RANGE_DONE", cookie: 8, offset: 0, length: rangeBytes }),
        ],
      },
      {
        what: "one range closed twice",
        records: () => [
          encode({ type: "SIGS", cookie: 5, offset: 0, length: rangeBytes }),
          encode({ type: "RANGE_DONE", cookie: 6, offset: 0, length: rangeBytes }),
          encode({ type: "RANGE_DONE", cookie: 7, offset: 0, length: rangeBytes }),
        ],
        waitFirst: true,
      },
    ];
    for (const attack of attacks) {
      const conn = await connect(server, key, dir);
      try {
        await conn.channel.send(encode(open({ mode: "push", name: "data.img", size, dryRun: true })));
        assert.equal((await next(conn))?.type, "OPEN_OK", attack.what);
        const records = attack.records({ size });
        if (attack.waitFirst) {
          await conn.channel.send(records.shift()!);
          assert.equal((await next(conn))?.type, "SIGS_REPLY", attack.what);
        }
        await Promise.all(records.map((r) => conn.channel.send(r).catch(() => {})));
        const { seen, end } = await drain(conn);
        assert.ok(!seen.includes("ERROR"), `${attack.what}: a violation closes the connection, it gets no ERROR (${seen})`);
        assert.equal(end, "EOF", `${attack.what}: the connection is closed without END`);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
      assert.equal(cli.child.exitCode, null, `${attack.what}: the listener died: ${cli.stderr()}`);
    }
    // An honest client, served afterwards by the same process.
    const local = path.join(dir, "copy.img");
    await clientSync(server, { mode: "pull", local, name: "data.img", key, pool, knownHosts: path.join(dir, "known_hosts") });
    assert.equal(fileHash(local), fileHash(path.join(root, "data.img")));
    assert.equal(cli.child.exitCode, null, cli.stderr());
    assert.doesNotMatch(cli.stderr(), /Uncaught|unhandled/i);
  });
});

/** VmRSS of a process, in bytes (/proc/<pid>/status). */
function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  assert.ok(m, `no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

test("a read-only key cannot exhaust the listener's memory: pull sessions that stop reading stay within SESSION_MEMORY_BYTES each", { timeout: 120_000 }, async () => {
  await withCliListener([], async ({ dir, root, key, cli, server }) => {
    const MiB = 1 << 20;
    const rangeBytes = 8 * MiB;
    const size = 64 * MiB;
    fs.writeFileSync(path.join(root, "src.img"), randomBytes(size)); // incompressible
    const knownHosts = path.join(dir, "known_hosts");
    const pid = cli.child.pid!;
    // Warm up (workers, zstd, page cache) with an honest pull; the baseline is measured after it.
    const warm = path.join(dir, "warm.img");
    await clientSync(server, { mode: "pull", local: warm, name: "src.img", key, pool, knownHosts });
    const baseline = rssOf(pid);
    const hostile = 4;
    // "Why" item 2: 64 READ_DIFFs for the same 8 MiB range (overlap: refused on arrival), and
    // the same without overlap: 64 disjoint 1 MiB ranges. Then none of them reads a byte.
    const plans: { offset: number; length: number }[][] = [
      Array.from({ length: 64 }, () => ({ offset: 0, length: rangeBytes })),
      Array.from({ length: 64 }, (_, i) => ({ offset: i * MiB, length: MiB })),
    ];
    const conns: SecureConnection[] = [];
    let peak = baseline;
    try {
      for (let i = 0; i < hostile; i++) {
        for (const plan of plans) {
          const conn = await connect(server, key, dir);
          conns.push(conn);
          await conn.channel.send(encode(open({ mode: "pull", name: "src.img", size: 0, dryRun: false })));
          assert.equal((await next(conn))?.type, "OPEN_OK");
          conn.channel.socket.pause();
          plan.forEach((r, k) => {
            const digests = new Uint8Array((r.length / BLOCK) * DIGEST_SIZE); // every block differs
            conn.channel.send(encode({ type: "READ_DIFF", cookie: 10 + k, offset: r.offset, length: r.length, digests })).catch(() => {});
          });
        }
      }
      // The listener works until every session is blocked on its sends; watch its RSS meanwhile.
      for (let t = 0; t < 60; t++) {
        await new Promise((r) => setTimeout(r, 50));
        peak = Math.max(peak, rssOf(pid));
      }
      // The sessions refused on arrival hold nothing; the others each hold at most SESSION_MEMORY_BYTES.
      const budget = baseline + hostile * SESSION_MEMORY_BYTES;
      assert.ok(peak < budget, `listener RSS ${peak >> 20} MiB; budget ${budget >> 20} MiB (baseline ${baseline >> 20} MiB)`);
      // Still serving: an honest pull completes while the hostile sessions hold on.
      const local = path.join(dir, "copy.img");
      await clientSync(server, { mode: "pull", local, name: "src.img", key, pool, knownHosts });
      assert.equal(fileHash(local), fileHash(path.join(root, "src.img")));
    } finally {
      for (const c of conns) await c[Symbol.asyncDispose]().catch(() => {});
    }
    assert.equal(cli.child.exitCode, null, cli.stderr());
  });
});
