/**
 * A hostile authenticated peer and refinement (spec §5.8), against a real listener on
 * 127.0.0.1 through a hand-driven client (test/helpers/raw-client.ts). Each violation closes
 * that session only (EOF without END, a log line); the listener goes on serving.
 *
 * Push (the raw client is the source): REFINE outside an open range, oversized, repeated, of
 * a block the destination holds as zeros, without OPEN_REFINE; PATCH twice on one block; an
 * unasked SUB_DIGESTS. Pull (the raw client is the destination): a SUB_DIGESTS that answers
 * with the wrong length, or answers nothing; and a client that never answers holds at most
 * one REFINE per stream on the server (bounded), which sends nothing more in that stream.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE, HEADER_SIZE, SUB_BLOCK_SIZE } from "../../protocol/constants.ts";
import type { Message } from "../../protocol/messages.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import type { SecureConnection } from "../../src/net/secure-connection.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import { PULL_TASKS } from "../../src/session/session-limits.ts";
import { fileHash, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, startListener, type TestServer, waitFor } from "../helpers/network.ts";
import { nextMessage as next, openMessage, rawConnect as connect } from "../helpers/raw-client.ts";

const T = { timeout: 60_000 };
const BS = 65536;
const SIZE = 16 * BS;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

function open(mode: "push" | "pull", o: { refine?: boolean; size?: number } = {}): Message {
  return { ...openMessage({ mode, name: "f.img", size: o.size ?? SIZE, dryRun: false }), blockSize: BS, ...(o.refine === false ? {} : { refine: true }) } as Message;
}

/** The session ends without END (EOF or reset), and the log names the violation. */
async function assertClosed(conn: SecureConnection, server: TestServer, pattern: RegExp): Promise<void> {
  for (let i = 0; i < 64; i++) {
    const m = await next(conn);
    if (m === null) break;
    assert.ok(i < 63, "the session goes on");
  }
  await waitFor(() => server.logs.some((l) => pattern.test(l)), { timeoutMs: 5000, what: `a log line matching ${pattern}` });
}

/** The listener still serves a well-behaved push after all that. */
async function assertServing(server: TestServer, dir: string, key: KeyPair): Promise<void> {
  const src = path.join(dir, "ok.img");
  fs.writeFileSync(src, randomBytes(3 * BS));
  await clientSync(server, { mode: "push", local: src, name: "ok.img", key, pool, knownHosts: path.join(dir, "known_hosts") });
  assert.equal(fileHash(path.join(server.root, "ok.img")), fileHash(src));
}

async function withServer(body: (o: { server: TestServer; dir: string; key: KeyPair }) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const server = await startListener(dir, { pool });
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      // Data in blocks 0..7, a hole in 8..15.
      const fd = fs.openSync(path.join(server.root, "f.img"), "w");
      fs.ftruncateSync(fd, SIZE);
      fs.writeSync(fd, randomBytes(8 * BS), 0, 8 * BS, 0);
      fs.closeSync(fd);
      await body({ server, dir, key });
      await assertServing(server, dir, key);
    } finally {
      await server.listener.close();
    }
  });
}

/** A push session, opened, with the range [0, SIZE) open (SIGS answered). */
async function openPush(server: TestServer, dir: string, key: KeyPair, o: { refine?: boolean; sigs?: boolean } = {}): Promise<SecureConnection> {
  const conn = await connect(server, key, dir);
  await conn.channel.send(encode(open("push", o)));
  const ok = await next(conn);
  assert.equal(ok?.type, "OPEN_OK");
  assert.equal(ok.type === "OPEN_OK" && ok.refine === true, o.refine !== false, "CAP_REFINE only when OPEN_REFINE");
  if (o.sigs !== false) {
    await conn.channel.send(encode({ type: "SIGS", cookie: 2, offset: 0, length: SIZE }));
    assert.equal((await next(conn))?.type, "SIGS_REPLY");
  }
  return conn;
}

describe("hostile refinement, push (the client is the source)", T, () => {
  test("REFINE outside an open range closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPush(server, dir, key, { sigs: false });
      try {
        await conn.channel.send(encode({ type: "REFINE", cookie: 3, offset: 0, length: BS }));
        await assertClosed(conn, server, /failed: .*REFINE .*open range/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("an oversized REFINE closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPush(server, dir, key);
      try {
        const rec = encode({ type: "REFINE", cookie: 3, offset: 0, length: BS });
        new DataView(rec.buffer).setUint32(20, 2 * 1024 * 1024); // length 2 MiB: past MAX_REFINE_LENGTH
        await conn.channel.send(rec);
        await assertClosed(conn, server, /failed: .*REFINE: length/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("REFINE of a block twice closes the session (the first is answered)", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPush(server, dir, key);
      try {
        await conn.channel.send(encode({ type: "REFINE", cookie: 3, offset: BS, length: 2 * BS }));
        const sub = await next(conn);
        assert.equal(sub?.type, "SUB_DIGESTS");
        assert.ok(sub.type === "SUB_DIGESTS" && sub.cookie === 3 && sub.offset === BS && sub.length === 2 * BS);
        assert.equal(sub.type === "SUB_DIGESTS" && sub.digests.length, (2 * BS / SUB_BLOCK_SIZE) * DIGEST_SIZE);
        await conn.channel.send(encode({ type: "REFINE", cookie: 4, offset: 2 * BS, length: BS }));
        await assertClosed(conn, server, /failed: .*REFINE .*refined before/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("REFINE of a block the destination holds as zeros closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPush(server, dir, key);
      try {
        await conn.channel.send(encode({ type: "REFINE", cookie: 3, offset: 9 * BS, length: BS }));
        await assertClosed(conn, server, /failed: .*REFINE .*all zero/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("REFINE or PATCH without OPEN_REFINE closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      for (const type of ["REFINE", "PATCH"] as const) {
        const conn = await openPush(server, dir, key, { refine: false });
        try {
          const m: Message = type === "REFINE"
            ? { type, cookie: 3, offset: 0, length: BS }
            : { type, cookie: 3, offset: 0, length: BS, data: Uint8Array.of(1, 0), zeros: new Uint8Array(2), payload: randomBytes(SUB_BLOCK_SIZE), zstd: false };
          await conn.channel.send(encode(m));
          await assertClosed(conn, server, new RegExp(`failed: .*${type} without OPEN_REFINE`));
        } finally {
          await conn[Symbol.asyncDispose]().catch(() => {});
        }
      }
    });
  });

  test("PATCH of a block twice closes the session (the first is applied)", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPush(server, dir, key);
      try {
        const patch = (cookie: number): Message => ({
          type: "PATCH",
          cookie,
          offset: 0,
          length: BS,
          data: Uint8Array.of(4, 0),
          zeros: new Uint8Array(2),
          payload: randomBytes(SUB_BLOCK_SIZE),
          zstd: false,
        });
        await conn.channel.send(encode(patch(3)));
        assert.equal((await next(conn))?.type, "ACK");
        await conn.channel.send(encode(patch(4)));
        await assertClosed(conn, server, /failed: .*twice/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("a SUB_DIGESTS nobody asked for closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPush(server, dir, key);
      try {
        await conn.channel.send(encode({ type: "SUB_DIGESTS", cookie: 2, offset: 0, length: BS, digests: new Uint8Array(16 * DIGEST_SIZE) }));
        await assertClosed(conn, server, /failed: .*SUB_DIGESTS .*answers no REFINE/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });
});

/** A pull session whose READ_DIFF claims other data in blocks 0..7: the server asks REFINE. */
async function openPull(server: TestServer, dir: string, key: KeyPair, streams: number): Promise<SecureConnection> {
  const conn = await connect(server, key, dir);
  await conn.channel.send(encode(open("pull", { size: 0 })));
  const ok = await next(conn);
  assert.ok(ok?.type === "OPEN_OK" && ok.refine === true);
  for (let i = 0; i < streams; i++) {
    const digests = new Uint8Array(DIGEST_SIZE).fill(0xaa); // non-zero, not the source's
    await conn.channel.send(encode({ type: "READ_DIFF", cookie: 10 + i, offset: i * BS, length: BS, digests }));
  }
  return conn;
}

describe("hostile refinement, pull (the client is the destination)", T, () => {
  test("a SUB_DIGESTS of the wrong length closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPull(server, dir, key, 1);
      try {
        const refine = await next(conn);
        assert.ok(refine?.type === "REFINE" && refine.cookie === 10 && refine.offset === 0 && refine.length === BS, JSON.stringify(refine));
        await conn.channel.send(encode({ type: "SUB_DIGESTS", cookie: 10, offset: 0, length: BS / 2, digests: new Uint8Array(8 * DIGEST_SIZE) }));
        await assertClosed(conn, server, /failed: .*SUB_DIGESTS .*does not answer REFINE/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("a SUB_DIGESTS on a stream that asked nothing closes the session", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const conn = await openPull(server, dir, key, 1);
      try {
        assert.equal((await next(conn))?.type, "REFINE");
        await conn.channel.send(encode({ type: "SUB_DIGESTS", cookie: 77, offset: 0, length: BS, digests: new Uint8Array(16 * DIGEST_SIZE) }));
        await assertClosed(conn, server, /failed: .*SUB_DIGESTS .*answers no REFINE/);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });

  test("a client that never answers holds one REFINE per stream; an answer gets the changed pages", T, async () => {
    await withServer(async ({ server, dir, key }) => {
      const streams = PULL_TASKS;
      const conn = await openPull(server, dir, key, streams);
      try {
        const refines = new Map<number, Message>();
        for (let i = 0; i < streams; i++) {
          const m = await next(conn);
          assert.equal(m?.type, "REFINE");
          refines.set(m!.cookie, m!);
        }
        assert.equal(refines.size, streams, "one REFINE per stream");
        // Nothing more comes while they are unanswered.
        const pending = next(conn);
        let timer: ReturnType<typeof setTimeout> | undefined;
        const more = await Promise.race([pending, new Promise((r) => timer = setTimeout(() => r("quiet"), 500))]);
        clearTimeout(timer);
        assert.equal(more, "quiet");
        // Answer one: every page of our block "differs" (non-zero sub-digests), so the server sends them all.
        await conn.channel.send(encode({ type: "SUB_DIGESTS", cookie: 10, offset: 0, length: BS, digests: new Uint8Array(16 * DIGEST_SIZE).fill(0xbb) }));
        const data = await pending;
        assert.ok(data?.type === "DATA" && data.cookie === 10 && data.offset === 0 && data.length === BS, `${data?.type}`);
        assert.ok(data.type === "DATA" && data.payload!.length + HEADER_SIZE > 0);
        const done = await next(conn);
        assert.ok(done?.type === "RANGE_DONE" && done.cookie === 10);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    });
  });
});
