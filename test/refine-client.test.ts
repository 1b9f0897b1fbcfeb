/**
 * A hostile or broken listener and refinement, towards a real client over 127.0.0.1 (a
 * hand-written listener: test/helpers/fake-listener.ts). The client fails the sync (a
 * ProtocolError: it closes the connection), its destination stays its old image, and the
 * process goes on.
 *
 * Pull (the listener is the source): REFINE repeated, REFINE outside the range asked,
 * REFINE of a block the client holds as zeros, REFINE without CAP_REFINE; CAP_REFINE the
 * client never offered. Push (the listener is the destination): a SUB_DIGESTS of another range.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { DIGEST_SIZE } from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";
import { ProtocolError } from "../protocol/codec.ts";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import type { SecureConnection } from "../src/net/secure-connection.ts";
import { clientSync } from "./helpers/network.ts";
import { drain, receiveMessage, sendMessage, startFakeListener } from "./helpers/fake-listener.ts";
import { fileHash, withTempDir } from "./helpers/sparse.ts";

const BS = 65536;
const SIZE = 8 * BS;
const T = { timeout: 30_000 };

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** Answers OPEN (with CAP_REFINE unless told), then runs `script` on the first request after it; then drains. */
async function fakeSession(conn: SecureConnection, o: { refine?: boolean; script: (conn: SecureConnection, first: Message) => Promise<void> }): Promise<void> {
  const open = await receiveMessage(conn);
  if (open?.type !== "OPEN") return;
  await sendMessage(conn, { type: "OPEN_OK", cookie: open.cookie, size: SIZE, zstd: true, kind: "file", ...(o.refine === false ? {} : { refine: true }) });
  const first = await receiveMessage(conn);
  if (first) await o.script(conn, first);
  await drain(conn);
}

async function expectFailure(
  mode: "push" | "pull",
  o: { refine?: boolean; clientRefine?: boolean; script: (conn: SecureConnection, first: Message) => Promise<void> },
  pattern: RegExp,
): Promise<void> {
  await withTempDir(async (dir) => {
    const fake = await startFakeListener({ serve: (conn) => fakeSession(conn, o) });
    try {
      const local = path.join(dir, "local.img");
      const fd = fs.openSync(local, "w");
      fs.ftruncateSync(fd, SIZE);
      fs.writeSync(fd, randomBytes(4 * BS), 0, 4 * BS, 0); // data in blocks 0..3, a hole after
      fs.closeSync(fd);
      const before = fileHash(local);
      await assert.rejects(
        clientSync({ listener: { port: fake.port, address: "127.0.0.1" } }, {
          mode,
          local,
          name: "x.img",
          key: generateKeyPair(),
          pool,
          knownHosts: path.join(dir, "known_hosts"),
          refine: o.clientRefine,
        }),
        (e: Error) => e instanceof ProtocolError && pattern.test(e.message),
      );
      assert.equal(fileHash(local), before, "the local file is its old image");
    } finally {
      await fake.close();
    }
  });
}

const refine = (m: Message, offset: number, length: number): Message => ({ type: "REFINE", cookie: m.cookie, offset, length });

/** The READ_DIFF at `offset`: `first` or one of the next few (the client sends its ranges concurrently). */
async function readDiffAt(conn: SecureConnection, first: Message, offset: number): Promise<Message> {
  let m: Message | null = first;
  for (let i = 0; i < 8 && m !== null; i++) {
    if (m.type === "READ_DIFF" && m.offset === offset) return m;
    m = await receiveMessage(conn);
  }
  throw new Error(`no READ_DIFF at ${offset}`);
}

describe("a hostile listener and refinement", T, () => {
  test("pull: REFINE of the same block twice fails the sync", T, async () => {
    await expectFailure("pull", {
      script: async (conn, first) => {
        const m = await readDiffAt(conn, first, 0);
        await sendMessage(conn, refine(m, 0, BS));
        for (let i = 0; i < 8; i++) if ((await receiveMessage(conn))?.type === "SUB_DIGESTS") break;
        await sendMessage(conn, refine(m, 0, BS));
      },
    }, /refined before|unanswered/);
  });

  test("pull: REFINE outside the range asked fails the sync", T, async () => {
    await expectFailure("pull", {
      script: async (conn, m) => {
        const r = m as Extract<Message, { type: "READ_DIFF" }>;
        await sendMessage(conn, refine(m, r.offset + r.length, BS));
      },
    }, /outside the range/);
  });

  test("pull: REFINE of a block the client holds as zeros fails the sync", T, async () => {
    await expectFailure("pull", {
      script: async (conn, first) => {
        // One range: the data (blocks 0..3) and the hole after it (planRanges); block 4 is in the hole.
        const m = await readDiffAt(conn, first, 0);
        assert.equal((m as Extract<Message, { type: "READ_DIFF" }>).length, SIZE, "the hole is in the data's range");
        await sendMessage(conn, refine(m, 4 * BS, BS));
      },
    }, /all zero here/);
  });

  test("pull: REFINE without CAP_REFINE fails the sync", T, async () => {
    await expectFailure("pull", { refine: false, script: async (conn, first) => sendMessage(conn, refine(await readDiffAt(conn, first, 0), 0, BS)) }, /without CAP_REFINE/);
  });

  test("CAP_REFINE to a client that did not offer it fails the sync", T, async () => {
    for (const mode of ["push", "pull"] as const) {
      await expectFailure(mode, { clientRefine: false, script: () => Promise.resolve() }, /CAP_REFINE without OPEN_REFINE/);
    }
  });

  test("push: a SUB_DIGESTS that answers another range fails the sync", T, async () => {
    await expectFailure("push", {
      script: async (conn, m) => {
        // SIGS: claim other data everywhere, so the client asks REFINE.
        const sigs = m as Extract<Message, { type: "SIGS" }>;
        const blocks = Math.ceil(sigs.length / BS);
        await sendMessage(conn, { type: "SIGS_REPLY", cookie: m.cookie, offset: sigs.offset, length: sigs.length, digests: new Uint8Array(blocks * DIGEST_SIZE).fill(5) });
        for (let i = 0; i < 16; i++) {
          const r = await receiveMessage(conn);
          if (r === null) return;
          if (r.type === "REFINE") {
            await sendMessage(conn, { type: "SUB_DIGESTS", cookie: r.cookie, offset: r.offset + BS, length: r.length, digests: new Uint8Array((r.length / 4096) * DIGEST_SIZE) });
            return;
          }
        }
      },
    }, /does not answer REFINE/);
  });
});
