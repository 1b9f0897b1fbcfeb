/**
 * A hostile authenticated pull client that refines (spec §5.8) and never answers, against a
 * real listener on 127.0.0.1 (raw client): the idle timeout must still end its session.
 *
 * A stream waiting for SUB_DIGESTS is idle (the client owes the answer), but a READ_DIFF that
 * waits for one of the PULL_TASKS working slots those streams hold counted as busy work: with
 * one READ_DIFF more than PULL_TASKS, the session was never idle and was served forever,
 * holding its slot, its file and the memory of its streams, without one record from the client.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { encode } from "../../protocol/codec.ts";
import { DIGEST_SIZE } from "../../protocol/constants.ts";
import type { Message } from "../../protocol/messages.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { generateKeyPair } from "../../src/noise/x25519.ts";
import { PULL_TASKS } from "../../src/session/session-limits.ts";
import { withTempDir } from "../helpers/sparse.ts";
import { authorize, startListener, waitFor } from "../helpers/network.ts";
import { nextMessage as next, openMessage, rawConnect as connect } from "../helpers/raw-client.ts";

const T = { timeout: 60_000 };
const BS = 65536;
const STREAMS = PULL_TASKS + 1;
const SIZE = STREAMS * BS;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

describe("hostile pull: refining streams that are never answered", T, () => {
  test("one READ_DIFF more than PULL_TASKS does not keep the session from its idle timeout", T, async () => {
    await withTempDir(async (dir) => {
      const idleTimeoutMs = 1000;
      const server = await startListener(dir, { pool, idleTimeoutMs });
      try {
        const key = generateKeyPair();
        authorize(server.authorizedKeys, key);
        fs.writeFileSync(path.join(server.root, "f.img"), randomBytes(SIZE));
        const conn = await connect(server, key, dir);
        try {
          const open = { ...openMessage({ mode: "pull", name: "f.img", size: 0, dryRun: false }), blockSize: BS, refine: true } as Message;
          await conn.channel.send(encode(open));
          const ok = await next(conn);
          assert.ok(ok?.type === "OPEN_OK" && ok.refine === true);
          for (let i = 0; i < STREAMS; i++) {
            const digests = new Uint8Array(DIGEST_SIZE).fill(0xaa); // non-zero, not the source's: REFINE
            await conn.channel.send(encode({ type: "READ_DIFF", cookie: 10 + i, offset: i * BS, length: BS, digests }));
          }
          for (let i = 0; i < PULL_TASKS; i++) assert.equal((await next(conn))?.type, "REFINE");
          // We answer nothing and send nothing: the session must end (EOF, no END) soon after the timeout.
          const started = Date.now();
          let timer: ReturnType<typeof setTimeout> | undefined;
          const outcome = await Promise.race([
            next(conn).then((m) => m === null ? "closed" : `got ${m.type}`),
            new Promise((r) => timer = setTimeout(() => r("still open"), 10 * idleTimeoutMs)),
          ]);
          clearTimeout(timer);
          assert.equal(outcome, "closed", `the session is ${outcome} ${Date.now() - started} ms after its last record`);
          await waitFor(() => server.logs.some((l) => /idle timeout/.test(l)), { timeoutMs: 5000, what: "an idle-timeout log line" });
        } finally {
          await conn[Symbol.asyncDispose]().catch(() => {});
        }
      } finally {
        await server.listener.close();
      }
    });
  });
});
