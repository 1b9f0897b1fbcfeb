/**
 * Issue 3 acceptance at the listener level: a real listener on 127.0.0.1, a real push client
 * (runClient over dial), and a TCP relay in between that the test controls.
 *
 * 1. Record tampering: the relay passes the handshake through, then parses the client's
 *    records (u32 word, bit 31 END, bits 0–30 ciphertext length) and replaces one of them:
 *    record 0 (OPEN, to an existing and to a new file), record 1 (the first record after
 *    OPEN_OK: SIGS) or record 2 (the first DATA). After the tamper the relay forwards nothing
 *    more from the client and does not close toward the listener (except for the truncation
 *    case), so the listener must notice and close by itself. Each time: the listener closes
 *    promptly and logs why, the client fails, the target's bytes (and, before OPEN is
 *    accepted, its mtime) are unchanged, no file appears, and a normal push right after
 *    succeeds byte for byte.
 * The relays live in test/helpers/relays.ts.
 * 2. A relay in the middle with its own key (which the listener even authorizes): a client
 *    with the listener's key pinned refuses (CHANGED), a client with no pin and no
 *    --accept-new refuses (unknown, showing the relay's fingerprint), --host-key with the
 *    listener's fingerprint refuses; nothing is written. A control shows the relay is a
 *    working man in the middle when the client trusts it blindly.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { connect } from "node:net";
import path from "node:path";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { dial } from "../../src/net/dial.ts";
import { IncompleteOnLossChannel } from "../../src/net/incomplete-on-loss-channel.ts";
import { fingerprint, formatPublicKey } from "../../src/trust/keys.ts";
import { MAX_SLOT_RECORD, TAG_SIZE } from "../../protocol/constants.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import { runClient, type SyncReport } from "../../src/session/client-session.ts";
import { openSource } from "../../src/storage/open-source.ts";
import { AuthenticationError, IncompleteSyncError } from "../../src/util/errors.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { MitmRelay, type RelayedConnection, type Tamper, TamperRelay } from "../helpers/relays.ts";
import {
  authorize,
  clientSync,
  startListener,
  type TestServer,
  waitFor,
} from "../helpers/network.ts";

const T = { timeout: 60_000 };
const MiB = 1 << 20;
const BLOCK = 65536;
const TAG = TAG_SIZE;
/** How soon the listener must close after a forged record (it needs no timeout for that). */
const PROMPT_MS = 3000;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool();
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

// ---------------------------------------------------------------------------------------
// The tampering relay

// ---------------------------------------------------------------------------------------
// Clients

/** A push through `port` (a relay) with the real client code: dial, then runClient. */
async function pushVia(
  port: number,
  options: {
    local: string;
    name: string;
    key: KeyPair;
    knownHosts: string;
    acceptNew?: boolean;
    hostKey?: string;
  },
): Promise<SyncReport> {
  const store = await openSource(options.local);
  try {
    const conn = await dial({
      host: "127.0.0.1",
      port,
      staticKey: options.key,
      knownHostsFile: options.knownHosts,
      acceptNew: options.acceptNew ?? true,
      hostKey: options.hostKey,
      timeoutMs: 5000,
    });
    try {
      const channel = new IncompleteOnLossChannel(conn.channel, { peer: `127.0.0.1:${port}` });
      return await runClient(channel, store, {
        mode: "push",
        name: options.name,
        blockSize: BLOCK,
        hash: "hmac-sha256",
        dryRun: false,
        // Whole blocks: record 2 must be the first DATA (refinement would send REFINE first).
        refine: false,
        pool,
      });
    } finally {
      await conn[Symbol.asyncDispose]().catch(() => {});
    }
  } finally {
    await store[Symbol.asyncDispose]();
  }
}

interface FileState {
  hash: string;
  size: number;
  mtimeMs: number;
}

function fileState(file: string): FileState {
  const st = fs.statSync(file);
  return { hash: fileHash(file), size: st.size, mtimeMs: st.mtimeMs };
}

/** The target's original content: 1 MiB, random, with an mtime far in the past. */
const OLD_TIME = new Date("2001-02-03T04:05:06Z");
function resetTarget(file: string, content: Buffer): void {
  fs.writeFileSync(file, content);
  fs.utimesSync(file, OLD_TIME, OLD_TIME);
}

function ls(dir: string): string[] {
  return fs.readdirSync(dir).sort();
}

// ---------------------------------------------------------------------------------------
// 1. Forged, replayed and truncated records

interface Setup {
  dir: string;
  server: TestServer;
  relay: TamperRelay;
  key: KeyPair;
  knownHosts: string;
  src: string;
  target: string;
  targetContent: Buffer;
  /** The relayed, untampered control push to a.img: the relay is transparent. */
  control: RelayedConnection;
}

async function withRelay(
  options: { idleTimeoutMs?: number },
  body: (s: Setup) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    // An idle timeout well under the test's, but far above PROMPT_MS: a listener that missed
    // a forgery and waits for more bytes fails the promptness check with a clear message.
    const server = await startListener(dir, {
      pool,
      idleTimeoutMs: options.idleTimeoutMs ?? 10_000,
    });
    const relay = await TamperRelay.start(server.listener.port);
    try {
      const key = generateKeyPair();
      authorize(server.authorizedKeys, key);
      const knownHosts = path.join(dir, "known_hosts");
      const src = path.join(dir, "src.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: MiB, fill: "random" }] });
      const target = path.join(server.root, "t.img");
      const targetContent = Buffer.from(fs.readFileSync(src)).map((b) => b ^ 0x5a) as Buffer;
      resetTarget(target, targetContent);

      // Control: the same push through the relay, untouched, works; its record sizes are
      // those the tamper points below assume (OPEN, SIGS, then DATA).
      await pushVia(relay.port, { local: src, name: "a.img", key, knownHosts });
      assert.equal(fileHash(path.join(server.root, "a.img")), fileHash(src));
      const control = relay.connections[0];
      assert.equal(
        control.frames[0].length,
        4 + 32 + 54 + "a.img".length + TAG,
        "record 0 is OPEN",
      );
      assert.equal(control.frames[1].length, 4 + 32 + TAG, "record 1 is SIGS (no payload)");
      assert.ok(
        control.frames[2].length > 4 + 32 + TAG + 4096,
        `record 2 is DATA (${control.frames[2].length} bytes)`,
      );
      await waitFor(() => server.listener.load.sessions === 0, {
        timeoutMs: 5000,
        what: "the control session to end",
      });

      await body({ dir, server, relay, key, knownHosts, src, target, targetContent, control });
    } finally {
      await relay.close();
      await server.listener.close();
    }
  });
}

type TamperPoint =
  | "OPEN of an existing file"
  | "OPEN of a new file"
  | "first record after OPEN_OK (SIGS)"
  | "first DATA";
const POINTS: { point: TamperPoint; index: number; name: string }[] = [
  { point: "OPEN of an existing file", index: 0, name: "t.img" },
  { point: "OPEN of a new file", index: 0, name: "new.img" },
  { point: "first record after OPEN_OK (SIGS)", index: 1, name: "t.img" },
  { point: "first DATA", index: 2, name: "t.img" },
];

/**
 * One tampered push at `point`, then the checks: the listener closes promptly (or within
 * `closeWithinMs`) and logs `logged`, the client fails, nothing is written, and a normal
 * push right after succeeds.
 */
async function tamperedPush(
  s: Setup,
  p: (typeof POINTS)[number],
  tamper: Tamper["replace"],
  expect: { logged: RegExp; closeWithinMs?: number },
): Promise<void> {
  const what = `${p.point}`;
  resetTarget(s.target, s.targetContent);
  const before = fileState(s.target);
  const rootBefore = ls(s.server.root);
  const logsBefore = s.server.logs.length;
  s.relay.next = { index: p.index, replace: tamper };
  const started = s.relay.connections.length;

  const outcome = await pushVia(s.relay.port, {
    local: s.src,
    name: p.name,
    key: s.key,
    knownHosts: s.knownHosts,
  }).then(
    () => undefined,
    (e: Error) => e,
  );
  assert.ok(outcome instanceof Error, `${what}: the tampered push must fail`);
  assert.ok(
    outcome instanceof IncompleteSyncError,
    `${what}: the client reports the lost connection: ${outcome}`,
  );

  const conn = s.relay.connections[started];
  assert.ok(
    conn !== undefined && conn.tamperedAt !== undefined,
    `${what}: the relay reached record ${p.index}`,
  );
  if (p.index === 2) {
    assert.ok(conn.frames[2].length > 4096, `${what}: the tampered record carries data`);
  }
  const closedAt = await conn.upstreamClosed;
  assert.equal(
    conn.relayClosedUpstream,
    false,
    `${what}: the listener, not the relay, closed the connection`,
  );
  const within = expect.closeWithinMs ?? PROMPT_MS;
  assert.ok(
    closedAt - conn.tamperedAt! < within,
    `${what}: closed ${closedAt - conn.tamperedAt!} ms after the tamper`,
  );

  await waitFor(
    () => s.server.listener.load.sessions === 0 && s.server.listener.load.handshakes === 0,
    {
      timeoutMs: 5000,
      what: "the tampered session to end",
    },
  );
  const lines = s.server.logs.slice(logsBefore).join("\n");
  assert.match(lines, expect.logged, `${what}: listener log:\n${lines}`);
  assert.match(lines, /wrote 0 B, holes 0 B/, `${what}: listener log:\n${lines}`);
  assert.doesNotMatch(lines, /: ok$/m);

  // Nothing written: no new file, the target's bytes and size unchanged; before OPEN is
  // accepted not even its mtime (after OPEN the listener has resized it to the same size).
  assert.deepEqual(ls(s.server.root), rootBefore, `${what}: no file created or removed`);
  const now = fileState(s.target);
  assert.equal(now.hash, before.hash, `${what}: the target's bytes are unchanged`);
  assert.equal(now.size, before.size, `${what}: the target's size is unchanged`);
  if (p.index === 0) {
    assert.equal(
      now.mtimeMs,
      before.mtimeMs,
      `${what}: the target was not even opened for writing`,
    );
  }

  // The listener goes on serving: a normal push right after ends byte-identical.
  await clientSync(s.server, {
    mode: "push",
    local: s.src,
    name: "t.img",
    key: s.key,
    pool,
    knownHosts: s.knownHosts,
  });
  assert.equal(fileHash(s.target), fileHash(s.src), `${what}: the push after the tamper`);
}

function flipBit(frame: Buffer, byte: number, bit: number): Buffer {
  const out = Buffer.from(frame);
  out[byte] ^= 1 << bit;
  return out;
}

function lengthWord(word: number): Tamper["replace"] {
  return (frame) => {
    const out = Buffer.from(frame);
    out.writeUInt32BE(word >>> 0, 0);
    return { bytes: out };
  };
}

const AUTH_FAILED = /failed: Cannot read record \d+: Cannot decrypt: authentication failed/;

const CASES: {
  name: string;
  tamper: Tamper["replace"];
  logged: (index: number) => RegExp;
}[] = [
  {
    name: "a flipped bit in the header word: the END flag",
    tamper: (f) => ({ bytes: flipBit(f, 0, 7) }),
    // Either check may catch it: the END frame's fixed length, or the tag (the word is the AD).
    logged: (i) =>
      new RegExp(
        `failed: Cannot read record: invalid length field 0x8|${
          AUTH_FAILED.source.replace("\\d+", String(i))
        }`,
      ),
  },
  {
    name: "a flipped bit in the header word: the lowest set length bit (a shorter record)",
    tamper: (f) => {
      const length = f.readUInt32BE(0);
      const lowest = length & -length;
      const out = Buffer.from(f);
      out.writeUInt32BE(length ^ lowest, 0);
      return { bytes: out };
    },
    logged: (i) =>
      new RegExp(`${AUTH_FAILED.source.replace("\\d+", String(i))}|invalid length field`),
  },
  {
    name: "a flipped bit in the ciphertext",
    tamper: (f) => ({ bytes: flipBit(f, 4 + Math.floor((f.length - 4 - TAG) / 2), 3) }),
    logged: (i) => new RegExp(AUTH_FAILED.source.replace("\\d+", String(i))),
  },
  {
    name: "a flipped bit in the tag",
    tamper: (f) => ({ bytes: flipBit(f, f.length - 1, 0) }),
    logged: (i) => new RegExp(AUTH_FAILED.source.replace("\\d+", String(i))),
  },
  {
    name: "a truncated stream (the connection ends in the middle of a record)",
    tamper: (f) => ({ bytes: f.subarray(0, Math.floor(f.length / 2)), end: true }),
    logged: () =>
      /failed: Cannot read from the peer: the connection ended in the middle of a record \(truncated stream\)/,
  },
  {
    name: "a truncated stream (the connection ends in the middle of a header)",
    tamper: (f) => ({ bytes: f.subarray(0, 2), end: true }),
    logged: () => /truncated stream/,
  },
  {
    name: "a record-length field of 0",
    tamper: lengthWord(0),
    logged: () => /failed: Cannot read record: invalid length field 0x00000000/,
  },
  {
    name: "a record-length field of the cap + 1 (the cap: a batch record's, a slot and the largest message)",
    tamper: lengthWord(MAX_SLOT_RECORD + TAG + 1),
    logged: () =>
      new RegExp(
        `invalid length field 0x${(MAX_SLOT_RECORD + TAG + 1).toString(16).padStart(8, "0")}`,
      ),
  },
  {
    name: "a record-length field of 0xFFFFFFFF",
    tamper: lengthWord(0xffff_ffff),
    logged: () => /invalid length field 0xffffffff/,
  },
];

describe("listener: forged records close the connection, write nothing, and the listener serves on", () => {
  for (const c of CASES) {
    test(c.name, T, async () => {
      await withRelay({}, async (s) => {
        for (const p of POINTS) await tamperedPush(s, p, c.tamper, { logged: c.logged(p.index) });
      });
    });
  }

  test(
    "a replayed record: a previous record resent verbatim, or a record from an earlier session",
    T,
    async () => {
      await withRelay({}, async (s) => {
        // Record 0 of the earlier (control) session is its OPEN of a.img: replayed as record 0
        // of a new session it must not open a.img (keys differ per session).
        const aImg = path.join(s.server.root, "a.img");
        fs.utimesSync(aImg, OLD_TIME, OLD_TIME);
        const aBefore = fileState(aImg);
        const earlierOpen = s.control.frames[0];
        for (const p of POINTS) {
          const replace: Tamper["replace"] = (_frame, earlier) => ({
            bytes: p.index === 0 ? earlierOpen : earlier[earlier.length - 1],
          });
          await tamperedPush(s, p, replace, {
            logged: new RegExp(AUTH_FAILED.source.replace("\\d+", String(p.index))),
          });
        }
        assert.deepEqual(
          fileState(aImg),
          aBefore,
          "a.img, named by the replayed OPEN, was not touched",
        );
      });
    },
  );

  test(
    "a whole recorded session replayed verbatim to the listener: refused at the handshake, nothing written",
    T,
    async () => {
      await withRelay({}, async (s) => {
        // The control session pushed src to a.img; change a.img, then replay every byte the
        // client sent in that session. Accepting it would write src's bytes back.
        const aImg = path.join(s.server.root, "a.img");
        resetTarget(aImg, s.targetContent);
        const aBefore = fileState(aImg);
        const logsBefore = s.server.logs.length;
        const socket = connect(s.server.listener.port, "127.0.0.1");
        socket.on("error", () => {});
        let received = 0;
        socket.on("data", (c: Buffer) => (received += c.length));
        const closed = new Promise<void>((r) => socket.once("close", () => r()));
        await new Promise<void>((r) => socket.once("connect", () => r()));
        socket.write(Buffer.concat(s.control.raw));
        await closed;
        assert.equal(
          received,
          2 + 96,
          "the replayer got handshake message 2 and then a silent close",
        );
        await waitFor(() => s.server.logs.length > logsBefore, {
          timeoutMs: 5000,
          what: "the listener's log line",
        });
        assert.match(
          s.server.logs.slice(logsBefore).join("\n"),
          /refused: .*(authentication failed|decrypt)/i,
        );
        assert.deepEqual(fileState(aImg), aBefore);
        await clientSync(s.server, {
          mode: "push",
          local: s.src,
          name: "a.img",
          key: s.key,
          pool,
          knownHosts: s.knownHosts,
        });
        assert.equal(fileHash(aImg), fileHash(s.src));
      });
    },
  );

  test(
    "a flipped length bit that makes a record longer: the session waits at most the idle timeout, writes nothing",
    T,
    async () => {
      await withRelay({ idleTimeoutMs: 1000 }, async (s) => {
        // Set the lowest clear length bit: the record claims 2^k more bytes than follow.
        const longer: Tamper["replace"] = (f) => {
          const length = f.readUInt32BE(0);
          const out = Buffer.from(f);
          out.writeUInt32BE(length | (~length & (length + 1)), 0);
          return { bytes: out };
        };
        // A longer length within MAX_SLOT_RECORD + TAG_SIZE waits for bytes that never come; DATA
        // records may be full (MAX_PAYLOAD), and then any longer length is refused at once.
        const idle = /failed: the peer sent nothing for 1 s \(idle timeout\)/;
        const idleOrCap =
          /failed: (the peer sent nothing for 1 s \(idle timeout\)|Cannot read record: invalid length field)/;
        for (const p of POINTS) {
          await tamperedPush(s, p, longer, {
            logged: p.point === "first DATA" ? idleOrCap : idle,
            closeWithinMs: 5000,
          });
        }
      });
    },
  );
});

// ---------------------------------------------------------------------------------------
// 2. A relay in the middle holding its own keys

describe("listener: a relay in the middle holding its own keys", () => {
  test(
    "is detected: pinned key → CHANGED, no pin → unknown, --host-key → mismatch; nothing written",
    T,
    async () => {
      await withTempDir(async (dir) => {
        const server = await startListener(dir, { pool });
        const mitmKey = generateKeyPair();
        // Worst case: the relay's own key is even authorized at the listener.
        authorize(server.authorizedKeys, mitmKey);
        const relay = await MitmRelay.start(server.listener.port, mitmKey);
        try {
          const key = generateKeyPair();
          authorize(server.authorizedKeys, key);
          const src = path.join(dir, "src.img");
          makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: MiB, fill: "random" }] });
          const target = path.join(server.root, "t.img");
          const targetContent = Buffer.from(fs.readFileSync(src)).map((b) => b ^ 0xa5) as Buffer;
          resetTarget(target, targetContent);
          const before = fileState(target);
          const listenerFp = fingerprint(server.hostKey.publicKey);
          const relayFp = fingerprint(mitmKey.publicKey);

          // The client reaches the relay at the address it knows as the listener's
          // (a redirected network): its known_hosts pins the real listener's key there.
          const pinned = path.join(dir, "pinned_known_hosts");
          const pin = `127.0.0.1:${relay.port} ${
            formatPublicKey(server.hostKey.publicKey, { comment: "listener" })
          }\n`;
          fs.writeFileSync(pinned, pin);
          for (const acceptNew of [false, true]) {
            await assert.rejects(
              pushVia(relay.port, {
                local: src,
                name: "t.img",
                key,
                knownHosts: pinned,
                acceptNew,
              }),
              (e: Error) =>
                e instanceof AuthenticationError && /has CHANGED/.test(e.message) &&
                e.message.includes(relayFp),
              `pinned, acceptNew ${acceptNew}`,
            );
          }
          assert.equal(fs.readFileSync(pinned, "utf8"), pin, "the pin is not replaced");

          // No pin and no --accept-new: unknown host, and the fingerprint shown is the relay's,
          // which differs from the one the listener printed.
          const empty = path.join(dir, "empty_known_hosts");
          await assert.rejects(
            pushVia(relay.port, {
              local: src,
              name: "t.img",
              key,
              knownHosts: empty,
              acceptNew: false,
            }),
            (e: Error) =>
              e instanceof AuthenticationError && /is unknown/.test(e.message) &&
              e.message.includes(relayFp) &&
              !e.message.includes(listenerFp),
          );
          assert.equal(fs.existsSync(empty), false, "nothing pinned");

          // --host-key with the listener's fingerprint: refused.
          await assert.rejects(
            pushVia(relay.port, {
              local: src,
              name: "t.img",
              key,
              knownHosts: empty,
              acceptNew: false,
              hostKey: listenerFp,
            }),
            (e: Error) =>
              e instanceof AuthenticationError && e.message.includes(`not ${listenerFp}`),
          );
          assert.equal(fs.existsSync(empty), false, "nothing pinned");

          // The client never finished a handshake with the relay, no record reached the
          // listener, and nothing was written there.
          await waitFor(
            () => server.listener.load.sessions === 0 && server.listener.load.handshakes === 0,
            {
              timeoutMs: 5000,
              what: "the relay's sessions to end",
            },
          );
          assert.equal(relay.fooled, 0);
          assert.equal(relay.forwarded, 0);
          assert.deepEqual(ls(server.root), ["t.img"]);
          assert.deepEqual(fileState(target), before);
          assert.doesNotMatch(server.logs.join("\n"), /"t\.img"/, "no session asked for t.img");

          // Control: the relay is a working man in the middle. A client that trusts any new
          // key (--accept-new, no pin: trust on first use) is fooled, and pins the relay's key.
          const tofu = path.join(dir, "tofu_known_hosts");
          await pushVia(relay.port, {
            local: src,
            name: "t.img",
            key,
            knownHosts: tofu,
            acceptNew: true,
          });
          assert.equal(relay.fooled, 1);
          assert.ok(relay.forwarded > 0);
          assert.equal(fileHash(target), fileHash(src));
          assert.ok(
            fs.readFileSync(tofu, "utf8").includes(
              formatPublicKey(mitmKey.publicKey).split(" ").slice(0, 2).join(" "),
            ),
          );
        } finally {
          await relay.close();
          await server.listener.close();
        }
      });
    },
  );
});
