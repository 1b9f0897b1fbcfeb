/**
 * The shrink check's scan (shrink-check.ts, run while the listener handles OPEN) is bounded
 * and stops with its session (review finding 2). Any key may start it, a read-only one too,
 * with a dry-run push: the client picks the size, so it picks how much of the file is checked.
 * 1. a tail of written zeros larger than SHRINK_SCAN_BYTES is not read to its end: the shrink
 *    is refused, naming --allow-shrink (read whole, it would have been allowed); one within
 *    the budget is still read and allowed;
 * 2. without FFI (SSYNC_NO_FFI=1: holes cannot be found, so they would be read), a 64 GiB
 *    sparse tail is refused at once, naming --allow-shrink;
 * 3. a scan made long (SSYNC_TEST_SHRINK_SCAN_BYTES, without FFI over a sparse file) ends with
 *    its session within about a second once the client disconnects, and a second SIGTERM
 *    stops the listener as promptly.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { encode } from "../protocol/codec.ts";
import type { Message } from "../protocol/messages.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { SHRINK_SCAN_BYTES } from "../src/session/shrink-check.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { authorize, startCliListener, startListener, waitFor } from "./helpers/network.ts";
import { exitOf, withListenerSetup } from "./helpers/listener-setup.ts";
import { nextMessage, openMessage, rawConnect } from "./helpers/raw-client.ts";
import { withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 90_000 };
const MiB = 1 << 20;
const GiB = 1 << 30;

/** A file of `size` bytes, all written zeros (data extents, no holes) but its first byte, 1. */
function writtenZeros(file: string, size: number): void {
  const fd = fs.openSync(file, "w");
  try {
    const zeros = new Uint8Array(8 * MiB);
    for (let at = 0; at < size; at += zeros.length) fs.writeSync(fd, zeros, 0, Math.min(zeros.length, size - at), at);
    fs.writeSync(fd, new Uint8Array([1]), 0, 1, 0);
  } finally {
    fs.closeSync(fd);
  }
}

/** A sparse file of `size` bytes whose only data is its first byte, 1. */
function sparseTail(file: string, size: number): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.writeSync(fd, new Uint8Array([1]), 0, 1, 0);
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** The reply to `open`, or a failure after `ms`. */
async function replyWithin(conn: Awaited<ReturnType<typeof rawConnect>>, open: Message, ms: number): Promise<Message | null> {
  await conn.channel.send(encode(open));
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      nextMessage(conn),
      new Promise<never>((_, reject) => timer = setTimeout(() => reject(new Error(`no reply to OPEN within ${ms} ms`)), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const dryShrink = (name: string) => openMessage({ mode: "push", name, size: 1, dryRun: true });

test(`a dry run shrinking past more than ${SHRINK_SCAN_BYTES / MiB} MiB of written zeros is refused unread, naming --allow-shrink`, T, async () => {
  await withTempDir(async (dir) => {
    const pool = new WorkerPool({ size: 1 });
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      writtenZeros(path.join(server.root, "big.img"), SHRINK_SCAN_BYTES + 96 * MiB);
      writtenZeros(path.join(server.root, "small.img"), 8 * MiB);
      let conn = await rawConnect(server, key, dir);
      const big = await replyWithin(conn, dryShrink("big.img"), 30_000);
      await conn[Symbol.asyncDispose]();
      assert.equal(big?.type, "ERROR", `refused, not read to the end: got ${big?.type}`);
      if (big?.type === "ERROR") {
        assert.equal(big.code, "EPERM");
        assert.match(big.message, /Cannot shrink big\.img .*more than 64\.0 MiB past the new end may hold data.*--allow-shrink/);
      }
      conn = await rawConnect(server, key, dir);
      const small = await replyWithin(conn, dryShrink("small.img"), 30_000);
      await conn[Symbol.asyncDispose]();
      assert.equal(small?.type, "OPEN_OK", "a tail of zeros within the budget is read and cut without the flag");
    } finally {
      await server.listener.close();
      await pool[Symbol.asyncDispose]();
    }
  });
});

/** A CLI listener (scripts/ssync listen) without FFI serving `root`, and a raw client's key. */
async function noFfiListener(
  s: { config: string; root: string },
  env: Record<string, string> = {},
): Promise<Awaited<ReturnType<typeof startCliListener>>> {
  return await startCliListener(["--root", s.root, "--shutdown-grace", "60"], { config: s.config, env: { SSYNC_NO_FFI: "1", ...env } });
}


const sessionEnd = (log: string) => log.split("\n").find((l) => /push \(dry run\) "sparse\.img": read .*: (ok|failed)/.test(l));

test("without FFI, a dry run shrinking a 64 GiB sparse file to 1 byte is refused at once, naming --allow-shrink", T, async () => {
  await withListenerSetup(async (s) => {
    const file = path.join(s.root, "sparse.img");
    sparseTail(file, 64 * GiB);
    const listener = await noFfiListener(s);
    try {
      const conn = await rawConnect({ listener }, s.key, s.dir);
      const started = Date.now();
      const reply = await replyWithin(conn, dryShrink("sparse.img"), 10_000);
      await conn[Symbol.asyncDispose]();
      assert.equal(reply?.type, "ERROR");
      if (reply?.type === "ERROR") {
        assert.equal(reply.code, "EPERM");
        assert.match(reply.message, /--allow-shrink/);
      }
      assert.ok(Date.now() - started < 5000, `answered in ${Date.now() - started} ms`);
    } finally {
      await listener.stop();
      fs.rmSync(file);
    }
  });
});

test("a long scan ends with its session: the client leaving frees it within a second; so does a second SIGTERM", T, async () => {
  await withListenerSetup(async (s) => {
    const file = path.join(s.root, "sparse.img");
    // Without FFI the holes are read (about 1 GB/s): minutes of scanning with no budget.
    sparseTail(file, 256 * GiB);
    const listener = await noFfiListener(s, { SSYNC_TEST_SHRINK_SCAN_BYTES: String(1024 * GiB) });
    try {
      let conn = await rawConnect({ listener }, s.key, s.dir);
      await conn.channel.send(encode(dryShrink("sparse.img")));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(sessionEnd(listener.stderr()), undefined, "the scan is still running");
      await conn[Symbol.asyncDispose]();
      const left = Date.now();
      await waitFor(() => sessionEnd(listener.stderr()) !== undefined, { timeoutMs: 1500, what: "the session's end in the log" });
      assert.ok(Date.now() - left < 1500);
      assert.match(sessionEnd(listener.stderr())!, /failed: .*closed the connection/);

      conn = await rawConnect({ listener }, s.key, s.dir);
      await conn.channel.send(encode(dryShrink("sparse.img")));
      await new Promise((r) => setTimeout(r, 300));
      process.kill(listener.child.pid!, "SIGTERM");
      await waitFor(() => /SIGTERM: stopping/.test(listener.stderr()), { timeoutMs: 5000, what: "the first SIGTERM's line" });
      process.kill(listener.child.pid!, "SIGTERM");
      const cut = Date.now();
      assert.equal(await exitOf(listener.child, 3000), 0);
      assert.ok(Date.now() - cut < 3000);
      await conn[Symbol.asyncDispose]().catch(() => {});
    } finally {
      await listener.stop();
      fs.rmSync(file);
    }
  });
});
