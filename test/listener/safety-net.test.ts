/**
 * `ssync listen` has a process-level safety net (an unhandled rejection or uncaught exception
 * is logged and the listener keeps serving). This proves it is never needed: hostile
 * clients against a real `scripts/ssync listen` child, each of what once crashed a listener
 * or could (issue 7, "Why" 1, and garbage at every stage), leave it alive and serving, and
 * its log never shows the net's line.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import { encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE, MODE_XX } from "../../protocol/constants.ts";
import { encodeHandshakeFrame } from "../../protocol/handshake-frame.ts";
import { encodePreamble } from "../../protocol/preamble.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import type { SecureConnection } from "../../src/net/secure-connection.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import { SAFETY_NET_LINE } from "../../src/cli/listen-command.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, type CliListener, clientSync, makeKey, startCliListener, waitFor } from "../helpers/network.ts";
import { nextMessage, openMessage, rawConnect } from "../helpers/raw-client.ts";

const MiB = 1 << 20;
const BLOCK = 4096;
let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 2 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

type Server = { listener: { port: number; address: string } };

/** Reads until the listener ends the session (bounded: it must do so by itself). */
async function drain(conn: SecureConnection, max = 10_000): Promise<void> {
  for (let i = 0; i < max; i++) if ((await nextMessage(conn)) === null) return;
}

/** A session of `key` that runs `body`, then is left and disposed whatever happened. */
async function session(server: Server, key: KeyPair, dir: string, body: (conn: SecureConnection) => Promise<void>): Promise<void> {
  const conn = await rawConnect(server, key, dir);
  try {
    await body(conn);
  } catch {
    // The listener cut us: that is what the attack should get.
  } finally {
    await conn[Symbol.asyncDispose]().catch(() => {});
  }
}

const send = (conn: SecureConnection, record: Uint8Array) => conn.channel.send(record).catch(() => {});

/** Every attack, in turn; each resolves once its session or connection is over. */
function attacks(server: Server, keys: { reader: KeyPair; writer: KeyPair }, dir: string): [string, () => Promise<void>][] {
  const { reader, writer } = keys;
  const port = server.listener.port;
  const raw = (bytes: Uint8Array, o: { reset?: boolean } = {}) =>
    new Promise<void>((resolve) => {
      const s = connect({ port, host: "127.0.0.1" });
      s.on("error", () => {});
      s.once("connect", () => {
        s.write(bytes);
        if (o.reset) setTimeout(() => s.resetAndDestroy(), 20);
        else s.end();
      });
      s.once("close", () => resolve());
    });
  const fillSlotsThen = (tail: (conn: SecureConnection, cookie: number) => Promise<void>) => (conn: SecureConnection) =>
    (async () => {
      await send(conn, encode(openMessage({ mode: "push", name: "victim.img", size: 80 * MiB, dryRun: true })));
      if ((await nextMessage(conn))?.type !== "OPEN_OK") return;
      let cookie = 2;
      // SIGS over 1 MiB of data blocks each: slow enough that every task slot of the
      // session is taken when what follows arrives.
      for (let i = 0; i < 70; i++) send(conn, encode({ type: "SIGS", cookie: cookie++, offset: i * MiB, length: MiB }));
      await tail(conn, cookie);
      await drain(conn);
    })();
  return [
    ["RANGE_DONE for a range never opened while the task slots are full", () =>
      session(server, reader, dir, fillSlotsThen(async (conn, cookie) => {
        await send(conn, encode({ type: "RANGE_DONE", cookie, offset: 75 * MiB, length: MiB }));
      }))],
    ["two RANGE_DONEs back to back while the slots are full", () =>
      session(server, reader, dir, fillSlotsThen(async (conn, cookie) => {
        await send(conn, encode({ type: "RANGE_DONE", cookie, offset: 75 * MiB, length: MiB }));
        await send(conn, encode({ type: "RANGE_DONE", cookie: cookie + 1, offset: 75 * MiB, length: MiB }));
      }))],
    ["a bad zstd frame while the slots are full (a real push)", () =>
      session(server, writer, dir, async (conn) => {
        await send(conn, encode(openMessage({ mode: "push", name: "scratch.img", size: 16 * MiB, dryRun: false })));
        if ((await nextMessage(conn))?.type !== "OPEN_OK") return;
        let cookie = 2;
        for (let i = 0; i < 64; i++) send(conn, encode({ type: "SIGS", cookie: cookie++, offset: i * 64 * BLOCK, length: 64 * BLOCK }));
        await send(conn, encode({ type: "DATA", cookie: cookie++, offset: 0, length: BLOCK, zstd: true, payload: randomBytes(100) }));
        await send(conn, encode({ type: "RANGE_DONE", cookie: cookie++, offset: 0, length: 64 * BLOCK }));
        await drain(conn);
      })],
    ["64 READ_DIFFs of 8 MiB, never read, then a reset", () =>
      session(server, reader, dir, async (conn) => {
        await send(conn, encode(openMessage({ mode: "pull", name: "random.img", size: 0, dryRun: false })));
        if ((await nextMessage(conn))?.type !== "OPEN_OK") return;
        const digests = new Uint8Array((8 * MiB / BLOCK) * DIGEST_SIZE).fill(0x5a);
        for (let cookie = 2; cookie < 66; cookie++) send(conn, encode({ type: "READ_DIFF", cookie, offset: 0, length: 8 * MiB, digests }));
        await new Promise((r) => setTimeout(r, 300));
        conn.channel.socket.resetAndDestroy();
      })],
    ["garbage records: before OPEN, after OPEN, an unknown type, COMMIT first", () =>
      (async () => {
        await session(server, reader, dir, async (conn) => {
          await send(conn, randomBytes(64));
          await drain(conn);
        });
        await session(server, reader, dir, async (conn) => {
          await send(conn, encode(openMessage({ mode: "push", name: "victim.img", size: 80 * MiB, dryRun: true })));
          await nextMessage(conn);
          const unknown = new Uint8Array(32);
          unknown[1] = 99;
          await send(conn, unknown);
          await drain(conn);
        });
        await session(server, reader, dir, async (conn) => {
          await send(conn, encode(openMessage({ mode: "push", name: "victim.img", size: 80 * MiB, dryRun: true })));
          await nextMessage(conn);
          await send(conn, encode({ type: "COMMIT", cookie: 9, root: new Uint8Array(16) }));
          await send(conn, encode({ type: "FLUSH", cookie: 9 }));
          // Answered (ERROR, or the end), or the session goes on: either way we leave.
          await nextMessage(conn);
        });
      })()],
    ["a push cut mid-DATA", () =>
      session(server, writer, dir, async (conn) => {
        await send(conn, encode(openMessage({ mode: "push", name: "scratch.img", size: 16 * MiB, dryRun: false })));
        if ((await nextMessage(conn))?.type !== "OPEN_OK") return;
        await send(conn, encode({ type: "SIGS", cookie: 2, offset: 0, length: 64 * BLOCK }));
        await nextMessage(conn);
        for (let i = 0; i < 8; i++) send(conn, encode({ type: "DATA", cookie: 3 + i, offset: i * BLOCK, length: BLOCK, zstd: false, payload: randomBytes(BLOCK) }));
        conn.channel.socket.resetAndDestroy();
      })],
    ["garbage in the handshake: random bytes, a half handshake then a reset, an unknown key", () =>
      (async () => {
        await raw(randomBytes(1));
        await raw(randomBytes(5000));
        await raw(Buffer.concat([encodePreamble(MODE_XX), encodeHandshakeFrame(randomBytes(32))]), { reset: true });
        await rawConnect(server, generateKeyPair(), dir).then((c) => c[Symbol.asyncDispose](), () => {});
      })()],
  ];
}

test("hostile clients never need the listener's safety net: it stays alive and serving", { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    const config = path.join(dir, "config");
    const root = path.join(dir, "root");
    fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
    fs.mkdirSync(root);
    makeSparseFile(path.join(root, "victim.img"), { size: 80 * MiB, chunks: [{ offset: 0, length: 80 * MiB }] });
    makeSparseFile(path.join(root, "random.img"), { size: 8 * MiB, chunks: [{ offset: 0, length: 8 * MiB, fill: "random" }] });
    const authorizedKeys = path.join(config, "ssync", "authorized_keys");
    const reader = await makeKey(path.join(dir, "reader_key"));
    const writer = await makeKey(path.join(dir, "writer_key"));
    authorize(authorizedKeys, reader, { options: "read-only" });
    authorize(authorizedKeys, writer);
    const listener: CliListener = await startCliListener(["--root", root, "--shutdown-grace", "1"], { config });
    const server = { listener: { port: listener.port, address: `127.0.0.1:${listener.port}` } };
    const knownHosts = path.join(dir, "known_hosts");
    try {
      const src = path.join(dir, "src.img");
      let round = 0;
      for (const [what, attack] of attacks(server, { reader, writer }, dir)) {
        await attack();
        assert.equal(listener.child.exitCode, null, `the listener died after: ${what}\n${listener.stderr()}`);
        // Served right after, with a different image each time.
        makeSparseFile(src, { size: 2 * MiB, chunks: [{ offset: 0, length: MiB, seed: ++round }] });
        await clientSync(server, { mode: "push", local: src, name: "honest.img", key: writer, pool, knownHosts });
        assert.equal(fileHash(path.join(root, "honest.img")), fileHash(src), what);
      }
      // Every session the attacks opened ends by itself; their log lines are there.
      await waitFor(() => (listener.stderr().match(/ key SHA256:\S+ .*: (ok|failed|ended before commit)/g) ?? []).length >= 14, {
        timeoutMs: 20_000,
        what: "every session's log line",
      });
      const log = listener.stderr();
      assert.ok(!log.includes(SAFETY_NET_LINE), `the safety net was needed:\n${log}`);
      assert.doesNotMatch(log, /Uncaught|internal error/, log);
    } finally {
      await listener.stop();
    }
  });
});
