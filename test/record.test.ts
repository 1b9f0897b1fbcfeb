import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { connect } from "node:net";
import { once } from "node:events";
import { CipherState, MAX_NONCE } from "../src/noise/cipher-state.ts";
import { cipherFunction } from "../src/noise/cipher-function.ts";
import { MAX_RECORD, MAX_SLOT_RECORD, TAG_SIZE } from "../protocol/constants.ts";
import { NoiseRecordChannel } from "../src/net/noise-record-channel.ts";
import { acceptSecure, connectSecure, HandshakeRefusedError, type SecureConnection } from "../src/net/secure-connection.ts";
import { generateKeyPair, type KeyPair } from "../src/noise/x25519.ts";

const chacha = cipherFunction("ChaChaPoly");
const sameKey = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** A connected TCP pair on 127.0.0.1, with the server closed once both ends exist. */
async function tcpPair(): Promise<{ client: Socket; server: Socket }> {
  const listener: Server = createServer({ pauseOnConnect: true });
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const port = (listener.address() as { port: number }).port;
  const accepted = once(listener, "connection");
  const client = connect(port, "127.0.0.1");
  await once(client, "connect");
  const [server] = (await accepted) as [Socket];
  listener.close();
  return { client, server };
}

/** Resolves when the socket is closed; collects every byte it received. */
function recorder(socket: Socket): { bytes: () => number; closed: Promise<void> } {
  let n = 0;
  socket.on("data", (c: Buffer) => (n += c.length));
  return { bytes: () => n, closed: new Promise((r) => socket.once("close", () => r())) };
}

async function securePair(
  options: { rekeyInterval?: number; serverRekeyInterval?: number; psk?: Uint8Array; serverPsk?: Uint8Array } = {},
) {
  const { client, server } = await tcpPair();
  const clientKey = generateKeyPair();
  const serverKey = generateKeyPair();
  const [c, s] = await Promise.all([
    connectSecure(client, {
      staticKey: clientKey,
      psk: options.psk,
      verifyHost: (k) => sameKey(k, serverKey.publicKey),
      timeoutMs: 5000,
      channel: { rekeyInterval: options.rekeyInterval },
    }),
    acceptSecure(server, {
      staticKey: serverKey,
      psk: options.serverPsk ?? options.psk,
      authorize: (k) => sameKey(k, clientKey.publicKey),
      timeoutMs: 5000,
      channel: { rekeyInterval: options.serverRekeyInterval ?? options.rekeyInterval },
    }),
  ]);
  return { c, s, clientKey, serverKey };
}

/**
 * A receiving channel whose peer is a raw socket driven by the test with the matching
 * CipherState, to forge frames byte by byte.
 */
async function forgeryPair() {
  const { client, server } = await tcpPair();
  const key = randomBytes(32);
  const channel = new NoiseRecordChannel(server, {
    send: new CipherState(chacha, randomBytes(32)),
    receive: new CipherState(chacha, key),
  });
  const forger = new CipherState(chacha, key);
  const seal = (plaintext: Uint8Array, end = false) => {
    const header = Buffer.alloc(4);
    header.writeUInt32BE(((plaintext.length + 16) | (end ? 0x8000_0000 : 0)) >>> 0);
    const { ciphertext, tag } = forger.seal(header, plaintext);
    return Buffer.concat([header, ciphertext, tag]);
  };
  return { channel, raw: client, seal, serverSocket: server };
}

const T = { timeout: 15_000 };

describe("record layer over TCP", () => {
  test("round trips in both directions, then an orderly end", T, async () => {
    const { c, s } = await securePair();
    assert.ok(sameKey(c.handshakeHash, s.handshakeHash));
    const sizes = [0, 1, 15, 16, 17, 1000, 65_536, 300_001, MAX_RECORD];
    const records = sizes.map((n) => randomBytes(n));
    await Promise.all([
      (async () => {
        for (const r of records) await c.channel.send(r);
      })(),
      (async () => {
        for (const r of records) assert.ok(Buffer.from(r).equals(Buffer.from((await s.channel.receive())!)));
      })(),
    ]);
    for (const r of records) await s.channel.send(r);
    for (const r of records) assert.ok(Buffer.from(r).equals(Buffer.from((await c.channel.receive())!)));
    await c.channel.send(Buffer.from("last"));
    c.channel.close();
    assert.equal(Buffer.from((await s.channel.receive())!).toString(), "last");
    assert.equal(await s.channel.receive(), null);
    assert.equal(await s.channel.receive(), null);
    await assert.rejects(c.channel.send(new Uint8Array(1)), /closed/);
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
  });

  test("an oversized record is refused locally and the channel lives on", T, async () => {
    const { c, s } = await securePair();
    // The largest record is a batch's: a slot and the largest message (spec §2).
    await assert.rejects(c.channel.send(new Uint8Array(MAX_SLOT_RECORD + 1)), RangeError);
    await c.channel.send(Buffer.from("ok"));
    assert.equal(Buffer.from((await s.channel.receive())!).toString(), "ok");
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
  });

  test("256 MiB with back-pressure, in bounded time and memory", { timeout: 120_000 }, async () => {
    const { c, s } = await securePair();
    const record = randomBytes(1024 * 1024);
    const count = 256;
    let sent = 0;
    const sender = (async () => {
      for (let i = 0; i < count; i++) {
        record[0] = i;
        await c.channel.send(record);
        sent++;
      }
      c.channel.close();
    })();
    // The receiver stalls first: sends must stop resolving once the buffers are full.
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(sent < 48, `back-pressure: only bounded buffering while the reader stalls (sent ${sent} MiB)`);
    const start = performance.now();
    let received = 0;
    for (;;) {
      const r = await s.channel.receive();
      if (r === null) break;
      assert.equal(r.length, record.length);
      assert.equal(r[0], received & 0xff);
      received++;
    }
    await sender;
    const seconds = (performance.now() - start) / 1000;
    assert.equal(received, count);
    const runtime = "Deno" in globalThis ? "Deno" : `Node ${process.version}`;
    console.log(`record layer on loopback (${runtime}): ${(count / seconds).toFixed(0)} MiB/s`);
    await s[Symbol.asyncDispose]();
  });

  test("small records pipeline in order", { timeout: 60_000 }, async () => {
    const { c, s } = await securePair();
    const count = 100_000;
    const start = performance.now();
    const sender = (async () => {
      const r = new Uint8Array(32);
      const view = new DataView(r.buffer);
      for (let i = 0; i < count; i++) {
        view.setUint32(0, i);
        await c.channel.send(r);
      }
    })();
    for (let i = 0; i < count; i++) {
      const r = (await s.channel.receive())!;
      assert.equal(new DataView(r.buffer, r.byteOffset).getUint32(0), i);
    }
    await sender;
    const runtime = "Deno" in globalThis ? "Deno" : `Node ${process.version}`;
    console.log(`32-byte records (${runtime}): ${(count / ((performance.now() - start) / 1000)).toFixed(0)} records/s`);
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
  });

  test("sends issued without awaiting keep their order", T, async () => {
    const { c, s } = await securePair();
    const sends = [];
    for (let i = 0; i < 2000; i++) sends.push(c.channel.send(Buffer.from(`#${i}`)));
    for (let i = 0; i < 2000; i++) assert.equal(Buffer.from((await s.channel.receive())!).toString(), `#${i}`);
    await Promise.all(sends);
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
  });

  test("rekey boundary is crossed in both directions", T, async () => {
    const { c, s } = await securePair({ rekeyInterval: 3 });
    for (let i = 0; i < 10; i++) {
      await c.channel.send(Buffer.from(`c${i}`));
      await s.channel.send(Buffer.from(`s${i}`));
      assert.equal(Buffer.from((await s.channel.receive())!).toString(), `c${i}`);
      assert.equal(Buffer.from((await c.channel.receive())!).toString(), `s${i}`);
    }
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
  });

  test("rekey really changes the key: mismatched intervals fail at the first rekey", T, async () => {
    const { c, s } = await securePair({ rekeyInterval: 3, serverRekeyInterval: 4 });
    // Client→server record 0 was... none yet; server→client record 0 was the acceptance.
    for (const i of ["0", "1", "2"]) {
      await c.channel.send(Buffer.from(i));
      assert.equal(Buffer.from((await s.channel.receive())!).toString(), i);
    }
    await c.channel.send(Buffer.from("3")); // the client rekeyed after 3 records, the server did not
    await assert.rejects(s.channel.receive(), /authentication failed/);
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
  });

  test("a direction closes before its nonce could reach 2^64-1", T, async () => {
    const { client, server } = await tcpPair();
    const k1 = randomBytes(32), k2 = randomBytes(32);
    const near = (k: Uint8Array) => {
      const cs = new CipherState(chacha, k);
      cs.setNonce(MAX_NONCE - 3n);
      return cs;
    };
    const a = new NoiseRecordChannel(client, { send: near(k1), receive: near(k2) });
    const b = new NoiseRecordChannel(server, { send: near(k2), receive: near(k1) });
    await a.send(Buffer.from("x"));
    await a.send(Buffer.from("y"));
    await assert.rejects(a.send(Buffer.from("z")), /exhausted/);
    assert.equal(Buffer.from((await b.receive())!).toString(), "x");
    assert.equal(Buffer.from((await b.receive())!).toString(), "y");
    assert.equal(await b.receive(), null);
    await b[Symbol.asyncDispose]();
  });
});

describe("record layer violations kill the channel", () => {
  // Each case gets the valid first frame (already delivered) and returns what follows it.
  const cases: [string, (f: Awaited<ReturnType<typeof forgeryPair>>, first: Buffer) => Buffer, RegExp][] = [
    ["a flipped bit in a record", (f) => {
      const frame = f.seal(Buffer.from("hello"));
      frame[6] ^= 0x10;
      return frame;
    }, /authentication failed/],
    ["a flipped bit in the tag", (f) => {
      const frame = f.seal(Buffer.from("hello"));
      frame[frame.length - 1] ^= 1;
      return frame;
    }, /authentication failed/],
    ["a replayed record", (_, first) => first, /record 1: .*authentication failed/],
    ["a dropped record", (f) => {
      f.seal(Buffer.from("dropped"));
      return f.seal(Buffer.from("after the gap"));
    }, /record 1: .*authentication failed/],
    ["a length field of 0", () => Buffer.from([0, 0, 0, 0]), /invalid length field 0x00000000/],
    ["a length field of 15", () => Buffer.from([0, 0, 0, 15, 1, 2]), /invalid length field 0x0000000f/],
    ["a length field of the cap + 1", () => {
      const header = Buffer.alloc(4);
      header.writeUInt32BE(MAX_SLOT_RECORD + TAG_SIZE + 1);
      return header;
    }, /invalid length field/],
    ["a length field of 0xFFFFFFFF", () => Buffer.from([0xff, 0xff, 0xff, 0xff]), /invalid length field 0xffffffff/],
    ["an END record with a payload", (f) => f.seal(Buffer.from("x"), true), /invalid length field 0x80000011/],
    ["a truncated stream (EOF mid-record)", (f) => f.seal(Buffer.from("hello world")).subarray(0, 12), /middle of a record/],
    ["a truncated stream (EOF mid-header)", () => Buffer.from([0, 0]), /middle of a record/],
    ["EOF at a record boundary without END", () => Buffer.alloc(0), /without an END record/],
  ];
  for (const [name, forge, expected] of cases) {
    test(name, T, async () => {
      const f = await forgeryPair();
      const closed = new Promise((r) => f.raw.once("close", r));
      f.raw.on("error", () => {});
      const first = f.seal(Buffer.from("valid first"));
      f.raw.write(first);
      assert.equal(Buffer.from((await f.channel.receive())!).toString(), "valid first");
      f.raw.end(forge(f, first));
      await assert.rejects(f.channel.receive(), expected);
      await assert.rejects(f.channel.receive(), expected, "the channel stays dead");
      await assert.rejects(f.channel.send(new Uint8Array(1)), expected);
      await closed;
      assert.ok(f.serverSocket.destroyed);
    });
  }

  test("a huge length field allocates nothing and closes at once", T, async () => {
    const f = await forgeryPair();
    f.raw.on("error", () => {});
    const before = process.memoryUsage().arrayBuffers;
    f.raw.write(Buffer.from([0x7f, 0xff, 0xff, 0xff]));
    await assert.rejects(f.channel.receive(), /invalid length field 0x7fffffff/);
    assert.ok(process.memoryUsage().arrayBuffers - before < 64 * 1024 * 1024);
    f.raw.destroy();
  });
});

describe("secure connection handshake", () => {
  test("an unauthorized client key is refused with the encrypted END record, and nothing else", T, async () => {
    const { client, server } = await tcpPair();
    const serverKey = generateKeyPair();
    const clientKey = generateKeyPair();
    const seen = recorder(client);
    const [c, s] = await Promise.allSettled([
      connectSecure(client, { staticKey: clientKey, verifyHost: () => true, timeoutMs: 5000 }),
      acceptSecure(server, { staticKey: serverKey, authorize: () => false, timeoutMs: 5000 }),
    ]);
    assert.equal(c.status, "rejected");
    const refusal = (c as PromiseRejectedResult).reason;
    assert.ok(refusal instanceof HandshakeRefusedError && refusal.refused === true, String(refusal));
    assert.match(refusal.message, /the listener refused our key SHA256:\S+/);
    assert.equal(s.status, "rejected");
    assert.match((s as PromiseRejectedResult).reason.message, /is not authorized/);
    await seen.closed;
    assert.equal(seen.bytes(), 2 + 96 + 4 + TAG_SIZE, "the client received message 2 and one END frame");
  });

  test("a refused key is told so only by END: EOF, a reset or a forged record after message 3 is a close during the handshake", T, async () => {
    const endings: [string, (server: Socket) => void][] = [
      ["EOF", (server) => server.end()],
      ["a reset", (server) => server.resetAndDestroy()],
      // A record word and a tag the client's keys did not make.
      ["a record that fails authentication", (server) => server.end(Buffer.concat([Buffer.from([0x80, 0, 0, TAG_SIZE]), randomBytes(TAG_SIZE)]))],
    ];
    for (const [what, end] of endings) {
      const { client, server } = await tcpPair();
      server.on("error", () => {});
      const accepted = acceptSecure(server, {
        staticKey: generateKeyPair(),
        // The listener dies (or a forger answers) between message 3 and its answer.
        authorize: () => (end(server), new Promise<boolean>(() => {})),
        timeoutMs: 300,
      });
      accepted.catch(() => {});
      const error = await connectSecure(client, { staticKey: generateKeyPair(), verifyHost: () => true, timeoutMs: 5000 })
        .then(() => new Error("connected"), (e: Error) => e);
      assert.match(error.message, /the listener closed the connection during the handshake/, what);
      assert.ok(!(error instanceof HandshakeRefusedError) && (error as { refused?: boolean }).refused !== true, what);
      await assert.rejects(accepted, /timed out/);
    }
  });

  test("pairing: a refused code after message 3 is END; a wrong code cannot be (the keys differ) and stays a silent close", T, async () => {
    const psk = randomBytes(32);
    const refused = await tcpPair();
    const [c] = await Promise.allSettled([
      connectSecure(refused.client, { staticKey: generateKeyPair(), psk, verifyHost: () => true, timeoutMs: 5000 }),
      // The code was right but is used up: the listener's authorize says no.
      acceptSecure(refused.server, { staticKey: generateKeyPair(), psk, authorize: (_, info) => !info.paired, timeoutMs: 5000 }),
    ]);
    assert.ok((c as PromiseRejectedResult).reason instanceof HandshakeRefusedError);
    const wrong = await tcpPair();
    const [w, s] = await Promise.allSettled([
      connectSecure(wrong.client, { staticKey: generateKeyPair(), psk, verifyHost: () => true, timeoutMs: 5000 }),
      acceptSecure(wrong.server, { staticKey: generateKeyPair(), psk: randomBytes(32), authorize: () => true, timeoutMs: 5000 }),
    ]);
    assert.equal(s.status, "rejected");
    const error = (w as PromiseRejectedResult).reason;
    assert.ok(!(error instanceof HandshakeRefusedError), String(error));
    assert.match(error.message, /closed the connection during the handshake/);
  });

  test("the first-message deadline cuts a client that sends only the preamble, not one that sent message 1", T, async () => {
    const quiet = await tcpPair();
    const cut = acceptSecure(quiet.server, { staticKey: generateKeyPair(), authorize: () => true, timeoutMs: 5000, firstMessageTimeoutMs: 200 });
    quiet.client.write(Buffer.from("SSYNC\x00\x01\x00", "latin1"));
    await assert.rejects(cut, /the first handshake message did not arrive within 200 ms/);
    quiet.client.destroy();
    const slow = await tcpPair();
    const timedOut = acceptSecure(slow.server, { staticKey: generateKeyPair(), authorize: () => true, timeoutMs: 600, firstMessageTimeoutMs: 200 });
    // Preamble and a well-formed message 1 (any 32 bytes are an ephemeral key), then nothing.
    slow.client.write(Buffer.concat([Buffer.from("SSYNC\x00\x01\x00", "latin1"), Buffer.from([0, 32]), randomBytes(32)]));
    await assert.rejects(timedOut, /the handshake timed out after 600 ms/);
    slow.client.destroy();
  });

  for (const size of [1, 40, 100_000]) {
    test(`${size} random bytes to the responder get a silent close`, T, async () => {
      const { client, server } = await tcpPair();
      const seen = recorder(client);
      client.on("error", () => {});
      const accepted = acceptSecure(server, { staticKey: generateKeyPair(), authorize: () => true, timeoutMs: 1000 });
      client.write(randomBytes(size));
      await assert.rejects(accepted, /Cannot accept a secure connection/);
      await seen.closed;
      assert.equal(seen.bytes(), 0);
    });
  }

  test("a valid preamble followed by random bytes gets a silent close", T, async () => {
    const { client, server } = await tcpPair();
    const seen = recorder(client);
    client.on("error", () => {});
    const accepted = acceptSecure(server, { staticKey: generateKeyPair(), authorize: () => true, timeoutMs: 1000 });
    client.write(Buffer.concat([Buffer.from("SSYNC\x00\x01\x00", "latin1"), randomBytes(200)]));
    await assert.rejects(accepted, /handshake message of \d+ bytes, expected 32/);
    await seen.closed;
    assert.equal(seen.bytes(), 0);
  });

  test("a client that sends nothing times out", T, async () => {
    const { client, server } = await tcpPair();
    const accepted = acceptSecure(server, { staticKey: generateKeyPair(), authorize: () => true, timeoutMs: 200 });
    await assert.rejects(accepted, /timed out after 200 ms/);
    client.destroy();
  });

  test("pairing with XXpsk3: same code works, wrong code and disabled pairing fail", T, async () => {
    const psk = randomBytes(32);
    const { c, s } = await securePair({ psk });
    assert.ok(c.paired && s.paired);
    await c[Symbol.asyncDispose]();
    await s[Symbol.asyncDispose]();
    await assert.rejects(securePair({ psk, serverPsk: randomBytes(32) }), /Cannot/);
    const { client, server } = await tcpPair();
    const results = await Promise.allSettled([
      connectSecure(client, { staticKey: generateKeyPair(), psk, verifyHost: () => true, timeoutMs: 2000 }),
      acceptSecure(server, { staticKey: generateKeyPair(), authorize: () => true, timeoutMs: 2000 }),
    ]);
    assert.match((results[1] as PromiseRejectedResult).reason.message, /pairing, which is not enabled/);
    assert.equal(results[0].status, "rejected");
  });

  test("a man-in-the-middle relay with its own keys fails the pinned host key", T, async () => {
    const serverKey = generateKeyPair();
    const mitmKey = generateKeyPair();
    const clientKey = generateKeyPair();
    const toMitm = await tcpPair();
    const toServer = await tcpPair();
    let serverAccepted = false;
    const server = acceptSecure(toServer.server, {
      staticKey: serverKey,
      authorize: () => (serverAccepted = true),
      timeoutMs: 3000,
    });
    // The relay terminates the client's handshake with its own key and opens its own to the server.
    const mitm = (async () => {
      const fromClient = await acceptSecure(toMitm.server, { staticKey: mitmKey, authorize: () => true, timeoutMs: 3000 });
      const upstream = await connectSecure(toServer.client, { staticKey: mitmKey, verifyHost: () => true, timeoutMs: 3000 });
      return { fromClient, upstream };
    })();
    const client = connectSecure(toMitm.client, {
      staticKey: clientKey,
      verifyHost: (k) => sameKey(k, serverKey.publicKey),
      timeoutMs: 3000,
    });
    await assert.rejects(client, /is not the expected host key/);
    await assert.rejects(mitm, /Cannot accept/);
    toServer.client.destroy();
    await assert.rejects(server);
    assert.equal(serverAccepted, false);
  });

  test("a bad prologue mismatch fails the handshake", T, async () => {
    const { client, server } = await tcpPair();
    const results = await Promise.allSettled([
      connectSecure(client, {
        staticKey: generateKeyPair(),
        prologue: Buffer.from("a"),
        verifyHost: () => true,
        timeoutMs: 2000,
      }),
      acceptSecure(server, { staticKey: generateKeyPair(), prologue: Buffer.from("b"), authorize: () => true, timeoutMs: 2000 }),
    ]);
    assert.equal(results[0].status, "rejected");
    assert.equal(results[1].status, "rejected");
  });
});

export type { SecureConnection, KeyPair };
