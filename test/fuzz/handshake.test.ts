/**
 * Fuzzing the handshake responder behind a real Listener on 127.0.0.1 (issue 7, "Fuzzing"):
 * seeded random bytes, and real handshakes (an authorized client's preamble, message 1 and,
 * once message 2 is back, its message 3, in XX or XXpsk3) with bytes flipped, truncated,
 * extended or replaced at one point, delivered in random pieces, then ended with a FIN, a
 * reset, or silence. Per batch of connections at once:
 * - every connection ends within its deadline (the handshake's, or a session's idle timeout
 *   when the mutation left the handshake valid);
 * - no unhandled rejection, the listener keeps serving: an honest push after each batch is
 *   identical, and no handshake or session is left behind.
 *
 * Bounded in the suite (FUZZ_BATCHES batches of BATCH connections); SSYNC_FUZZ_ITERATIONS
 * sets the number of batches, SSYNC_FUZZ_SEED the first seed.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import path from "node:path";
import {
  MODE_PAIRING,
  MODE_XX,
  PAIRING_PROTOCOL_NAME,
  PROTOCOL_NAME,
  XX_MESSAGE_SIZES,
  XXPSK3_MESSAGE_SIZES,
} from "../../protocol/constants.ts";
import { encodeHandshakeFrame } from "../../protocol/handshake-frame.ts";
import { encodePreamble } from "../../protocol/preamble.ts";
import { WorkerPool } from "../../src/engine/worker-pool.ts";
import { HandshakeState } from "../../src/noise/handshake-state.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import { PairingOffer, pairingKey } from "../../src/trust/pairing-code.ts";
import { fileHash, makeSparseFile, withTempDir } from "../helpers/sparse.ts";
import { authorize, clientSync, startListener, type TestServer, waitFor } from "../helpers/network.ts";
import { loopbackAddresses } from "../helpers/handshake-flood.ts";
import { forEachSeed, fuzzIterations, type Random, watchUnhandledRejections } from "./random.ts";

const FUZZ_BATCHES = 12;
const BATCH = 8;
const HANDSHAKE_TIMEOUT_MS = 800;
const FIRST_MESSAGE_TIMEOUT_MS = 400;
const IDLE_TIMEOUT_MS = 800;
/** A connection must be closed by the listener within this (its longest path: a valid handshake, then an idle session). */
const DEADLINE_MS = HANDSHAKE_TIMEOUT_MS + IDLE_TIMEOUT_MS + 2000;

let pool: WorkerPool;
before(() => {
  pool = new WorkerPool({ size: 1 });
});
after(async () => {
  await pool[Symbol.asyncDispose]();
});

/** One of the ways a byte string is spoiled at one point (or left alone). */
function mutate(rng: Random, bytes: Uint8Array): Uint8Array {
  const at = rng.int(bytes.length + 1);
  switch (rng.int(7)) {
    case 0: { // a flipped bit
      if (bytes.length === 0) return bytes;
      const out = bytes.slice();
      out[Math.min(at, out.length - 1)] ^= 1 << rng.int(8);
      return out;
    }
    case 1: // truncated
      return bytes.subarray(0, at);
    case 2: // extended
      return concat(bytes, rng.bytes(rng.range(1, 300)));
    case 3: { // a byte replaced
      if (bytes.length === 0) return bytes;
      const out = bytes.slice();
      out[Math.min(at, out.length - 1)] = rng.int(256);
      return out;
    }
    case 4: // random bytes inserted
      return concat(concat(bytes.subarray(0, at), rng.bytes(rng.range(1, 64))), bytes.subarray(at));
    case 5: { // a length word set to an extreme
      const out = bytes.slice();
      if (out.length >= 2) out.set(rng.pick([[0, 0], [0xff, 0xff], [0, 31], [0, 33]]), Math.min(at, out.length - 2));
      return out;
    }
    default:
      return bytes;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Writes `bytes` in a few random pieces, a few ms apart. */
async function writeInPieces(rng: Random, socket: Socket, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length && !socket.destroyed) {
    const n = rng.range(1, Math.max(1, bytes.length - at));
    socket.write(bytes.subarray(at, at + n));
    at += n;
    if (rng.chance(0.3)) await new Promise((r) => setTimeout(r, rng.int(20)));
  }
}

/** Bytes the socket receives until it has `n`, or null once it closes first. */
function reader(socket: Socket): (n: number) => Promise<Uint8Array | null> {
  let buffered = new Uint8Array(0);
  let closed = false;
  let wake: (() => void) | undefined;
  socket.on("data", (c: Buffer) => {
    buffered = concat(buffered, c);
    wake?.();
  });
  socket.once("close", () => {
    closed = true;
    wake?.();
  });
  return async (n) => {
    while (buffered.length < n && !closed) await new Promise<void>((r) => (wake = r));
    if (buffered.length < n) return null;
    const out = buffered.subarray(0, n);
    buffered = buffered.subarray(n);
    return out;
  };
}

interface Fuzzer {
  port: number;
  key: KeyPair;
  psk: Uint8Array;
}

/**
 * One hostile connection; resolves with how long the listener took to close it after our
 * last byte (or rejects when it did not within DEADLINE_MS).
 */
async function oneConnection(rng: Random, f: Fuzzer, localAddress: string): Promise<void> {
  const socket = connect({ port: f.port, host: "127.0.0.1", localAddress });
  socket.on("error", () => {});
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  const read = reader(socket);
  await new Promise<void>((resolve) => {
    socket.once("connect", () => resolve());
    socket.once("close", () => resolve());
  });
  if (rng.chance(0.25)) {
    await writeInPieces(rng, socket, rng.bytes(rng.int(600)));
  } else {
    const paired = rng.chance(0.3);
    const clear = encodePreamble(paired ? MODE_PAIRING : MODE_XX);
    const hs = new HandshakeState(paired ? PAIRING_PROTOCOL_NAME : PROTOCOL_NAME, {
      initiator: true,
      prologue: clear,
      staticKeyPair: f.key,
      psk: paired ? f.psk : undefined,
    });
    const sizes = paired ? XXPSK3_MESSAGE_SIZES : XX_MESSAGE_SIZES;
    // Which part is spoiled: the first flight (preamble and message 1), or message 3.
    const spoilFirst = rng.chance(0.5);
    const first = concat(clear, encodeHandshakeFrame(hs.writeMessage()));
    await writeInPieces(rng, socket, spoilFirst ? mutate(rng, first) : first);
    const second = await read(2 + sizes[1]);
    if (second !== null && !spoilFirst) {
      let third: Uint8Array;
      try {
        hs.readMessage(second.subarray(2));
        third = encodeHandshakeFrame(hs.writeMessage());
      } catch {
        third = rng.bytes(2 + sizes[2]);
      }
      await writeInPieces(rng, socket, mutate(rng, third));
      // Sometimes garbage where the first records would be.
      if (rng.chance(0.3)) await writeInPieces(rng, socket, rng.bytes(rng.int(200)));
    }
  }
  const ending = rng.int(3);
  if (ending === 0) socket.end();
  else if (ending === 1 && rng.chance(0.5)) socket.resetAndDestroy();
  // else: silence; the listener must cut it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`a connection from ${localAddress} was still open after ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  try {
    await Promise.race([closed, late]);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

test("fuzzing the handshake responder: the listener never dies, every connection ends in time, an honest client is served after each batch", { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    const pairing = new PairingOffer();
    const server: TestServer = await startListener(dir, {
      pool,
      pairing,
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      firstMessageTimeoutMs: FIRST_MESSAGE_TIMEOUT_MS,
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      handshakeBurst: 100_000,
      handshakeRefillPerSecond: 100_000,
    });
    const fuzzKey = generateKeyPair();
    const honest = generateKeyPair();
    authorize(server.authorizedKeys, fuzzKey, { options: "read-only" });
    authorize(server.authorizedKeys, honest);
    const f: Fuzzer = { port: server.listener.port, key: fuzzKey, psk: pairingKey(pairing.code) };
    const addresses = loopbackAddresses(2, 4);
    const src = path.join(dir, "src.img");
    const knownHosts = path.join(dir, "known_hosts");
    try {
      const unhandled = await watchUnhandledRejections(async () => {
        await forEachSeed({ iterations: fuzzIterations(FUZZ_BATCHES), firstSeed: 7000, name: "handshake fuzz" }, async (rng) => {
          await Promise.all(Array.from({ length: BATCH }, () => oneConnection(rng, f, rng.pick(addresses))));
          makeSparseFile(src, { size: 256 * 1024, chunks: [{ offset: 0, length: 65536, seed: rng.seed }] });
          await clientSync(server, { mode: "push", local: src, name: "honest.img", key: honest, pool, knownHosts, blockSize: 4096 });
          assert.equal(fileHash(path.join(server.root, "honest.img")), fileHash(src));
        });
      });
      assert.deepEqual(unhandled, []);
      await waitFor(() => server.listener.load.handshakes === 0 && server.listener.load.sessions === 0, {
        timeoutMs: DEADLINE_MS,
        what: "no handshake or session left behind",
      });
      assert.ok(server.logs.some((l) => / refused: /.test(l)), "the fuzz was refused somewhere");
    } finally {
      await server.listener.close();
    }
  });
});
