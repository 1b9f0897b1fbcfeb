/**
 * The client against a hand-written, misbehaving server over the in-memory pair: what the
 * server says is checked, and a violation fails the session without writing anything.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { decode, encode, ProtocolError } from "../protocol/codec.ts";
import type { Message } from "../protocol/messages.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { runClient } from "../src/session/client-session.ts";
import { memoryPair } from "../src/session/memory-pair.ts";
import { openDestination } from "../src/storage/open-destination.ts";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1 << 20;

test("pull: DATA outside the range requested is a protocol violation; nothing is written", { timeout: 30_000 }, async () => {
  await withTempDir(async (dir) => {
    const local = path.join(dir, "local.img");
    makeSparseFile(local, { size: 4 * MiB, chunks: [{ offset: 0, length: 4 * MiB, seed: 2 }] });
    const before = fileHash(local);
    const [client, server] = memoryPair();
    const seen: string[] = [];
    const fake = (async () => {
      for (;;) {
        const rec = await server.receive().catch(() => null);
        if (rec === null) return;
        const m = decode(rec);
        seen.push(m.type);
        const reply = (r: Message) => server.send(encode(r)).catch(() => {});
        if (m.type === "OPEN") await reply({ type: "OPEN_OK", cookie: m.cookie, size: 4 * MiB, zstd: true, kind: "file" });
        if (m.type === "READ_DIFF" && m.offset === 0) {
          // Aims one block past the range it was asked about.
          await reply({ type: "DATA", cookie: m.cookie, offset: m.offset + m.length, length: 65536, payload: new Uint8Array(65536).fill(9), zstd: false });
        }
      }
    })();
    const pool = new WorkerPool({ size: 1 });
    const store = await openDestination(local, { create: false });
    try {
      await assert.rejects(
        runClient(client, store, { mode: "pull", name: "x", blockSize: 65536, hash: "hmac-sha256", dryRun: false, pool }),
        (e) => e instanceof ProtocolError && /outside the range requested at 0/.test((e as Error).message),
      );
    } finally {
      await store[Symbol.asyncDispose]();
      await pool[Symbol.asyncDispose]();
      server.close();
      await fake;
    }
    assert.ok(seen.includes("READ_DIFF"));
    assert.equal(fileHash(local), before, "nothing was written");
    assert.equal(fs.statSync(local).size, 4 * MiB);
  });
});

/** Runs a pull of a 4 MiB local file against `answer`, which replies to the READ_DIFF at 0. */
async function pullAgainst(
  answer: (m: Extract<Message, { type: "READ_DIFF" }>, reply: (r: Message) => Promise<void>) => Promise<void>,
  check: (e: unknown) => boolean,
): Promise<void> {
  await withTempDir(async (dir) => {
    const local = path.join(dir, "local.img");
    makeSparseFile(local, { size: 4 * MiB, chunks: [{ offset: 0, length: MiB, seed: 4 }] });
    const [client, server] = memoryPair();
    const fake = (async () => {
      for (;;) {
        const rec = await server.receive().catch(() => null);
        if (rec === null) return;
        const m = decode(rec);
        const reply = (r: Message) => server.send(encode(r)).catch(() => {});
        if (m.type === "OPEN") await reply({ type: "OPEN_OK", cookie: m.cookie, size: 4 * MiB, zstd: true, kind: "file" });
        if (m.type === "READ_DIFF" && m.offset === 0) {
          await answer(m, reply);
          server.close();
          return;
        }
      }
    })();
    const pool = new WorkerPool({ size: 1 });
    const store = await openDestination(local, { create: false });
    try {
      await assert.rejects(runClient(client, store, { mode: "pull", name: "x", blockSize: 65536, hash: "hmac-sha256", dryRun: false, pool }), check);
    } finally {
      await store[Symbol.asyncDispose]();
      await pool[Symbol.asyncDispose]();
      server.close();
      await fake;
    }
  });
}

test("pull: replies to one READ_DIFF must ascend without overlap (a server cannot stream forever inside a range)", { timeout: 30_000 }, async () => {
  const block = { length: 65536, payload: new Uint8Array(65536).fill(3), zstd: false };
  await pullAgainst(async (m, reply) => {
    // The same block again and again: each is inside the range, together they never end.
    for (let i = 0; i < 3; i++) await reply({ type: "DATA", cookie: m.cookie, offset: 0, ...block });
  }, (e) => e instanceof ProtocolError && /DATA \[0, 65536\) overlaps or precedes an earlier reply in the range at 0/.test((e as Error).message));
});

test("pull: a RANGE_DONE that does not name the range requested is a protocol violation", { timeout: 30_000 }, async () => {
  await pullAgainst(async (m, reply) => {
    await reply({ type: "RANGE_DONE", cookie: m.cookie, offset: m.offset, length: 65536 });
  }, (e) => e instanceof ProtocolError && /RANGE_DONE \[0, 65536\) does not match the range requested at 0/.test((e as Error).message));
});
