/**
 * Sending a record as parts (issue 9, scope 4): a DATA record goes to the channel as
 * [header, payload] and is sealed part by part, so its payload is copied once (by the
 * cipher), never concatenated with its header. How a record is split never shows: the
 * bytes on the wire are those of the same record sent as one buffer.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { once } from "node:events";
import { decode, encode, encodeParts } from "../protocol/codec.ts";
import { HEADER_SIZE, MAX_PAYLOAD, MAX_RECORD, SLOT_PREFIX_SIZE, TAG_SIZE } from "../protocol/constants.ts";
import type { Message } from "../protocol/messages.ts";
import { encodeRecordWord } from "../protocol/record-word.ts";
import { NoiseRecordChannel } from "../src/net/noise-record-channel.ts";
import { CipherState } from "../src/noise/cipher-state.ts";
import { cipherFunction } from "../src/noise/cipher-function.ts";
import { HandshakeState } from "../src/noise/handshake-state.ts";
import { publicKeyOf } from "../src/noise/x25519.ts";
import { memoryPair } from "../src/session/memory-pair.ts";
import { joinRecord, recordLength } from "../src/util/record-parts.ts";

const T = { timeout: 20_000 };
const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const concat = (parts: readonly Uint8Array[]) => new Uint8Array(Buffer.concat(parts));

/** Ways to cut n bytes: none, at the header, at odd and block-aligned points, empty parts. */
function splits(bytes: Uint8Array): Uint8Array[][] {
  const n = bytes.length;
  const cuts = [[], [Math.min(HEADER_SIZE, n)], [1, n - 1], [0, Math.min(63, n), Math.min(65, n), n], [Math.min(64, n), Math.min(128, n)]];
  return cuts.map((c) => {
    const points = [0, ...c.map((x) => Math.max(0, Math.min(n, x))), n].sort((x, y) => x - y);
    return points.slice(1).map((end, i) => bytes.subarray(points[i], end));
  });
}

describe("sealing parts", () => {
  for (const name of ["ChaChaPoly", "AESGCM"]) {
    test(`${name}: sealParts over any split is seal of the whole, and opens as one`, T, () => {
      const key = randomBytes(32);
      for (const size of [0, 1, 32, 100, 4096 + 7, HEADER_SIZE + (1 << 16), MAX_RECORD]) {
        const whole = new Uint8Array(randomBytes(size));
        for (const parts of splits(whole)) {
          const ad = randomBytes(4);
          const [a, b, r] = [0, 1, 2].map(() => new CipherState(cipherFunction(name), key));
          for (const s of [a, b, r]) s.setNonce(41n);
          const one = a.seal(ad, whole);
          const many = b.sealParts(ad, parts);
          const what = `${size} bytes cut into ${parts.map((p) => p.length).join("+")}`;
          assert.equal(toHex(concat(many.ciphertext)), toHex(one.ciphertext), what);
          assert.equal(toHex(many.tag), toHex(one.tag), what);
          assert.equal(many.ciphertext.length, parts.filter((p) => p.length > 0).length, "one ciphertext per non-empty part");
          assert.equal(b.nonce, 42n, "one nonce per record");
          assert.equal(toHex(r.open(ad, { ciphertext: concat(many.ciphertext), tag: many.tag })), toHex(whole));
        }
      }
    });
  }

  test("the cacophony vectors' transport messages, sealed in parts", T, () => {
    const vectorsUrl = new URL("../../shared/vectors/noise-xx-25519.json", import.meta.url);
    const vectors = JSON.parse(readFileSync(vectorsUrl, "utf8")).vectors as {
      protocol_name: string;
      init_prologue: string;
      init_static: string;
      init_ephemeral: string;
      init_psks?: string[];
      resp_prologue: string;
      resp_static: string;
      resp_ephemeral: string;
      resp_psks?: string[];
      messages: { payload: string; ciphertext: string }[];
    }[];
    const keyPair = (secret: string) => ({ secretKey: hex(secret), publicKey: publicKeyOf(hex(secret)) });
    const psk = (list?: string[]) => (list && list.length > 0 ? hex(list[0]) : undefined);
    let checked = 0;
    let expected = 0;
    for (const v of vectors) {
      expected += v.messages.length - 3;
      const sides = [
        new HandshakeState(v.protocol_name, { initiator: true, prologue: hex(v.init_prologue), staticKeyPair: keyPair(v.init_static), ephemeralKeyPair: keyPair(v.init_ephemeral), psk: psk(v.init_psks) }),
        new HandshakeState(v.protocol_name, { initiator: false, prologue: hex(v.resp_prologue), staticKeyPair: keyPair(v.resp_static), ephemeralKeyPair: keyPair(v.resp_ephemeral), psk: psk(v.resp_psks) }),
      ];
      for (let i = 0; i < 3; i++) sides[(i + 1) % 2].readMessage(sides[i % 2].writeMessage(hex(v.messages[i].payload)));
      const send = [sides[0].split().send, sides[1].split().send];
      v.messages.slice(3).forEach((m, j) => {
        const payload = hex(m.payload);
        const cut = Math.min(payload.length, 1 + (j % 7));
        const { ciphertext, tag } = send[(3 + j) % 2].sealParts(new Uint8Array(0), [payload.subarray(0, cut), payload.subarray(cut)]);
        assert.equal(toHex(concat([...ciphertext, tag])), m.ciphertext, `${v.protocol_name} message ${3 + j}`);
        checked++;
      });
    }
    assert.ok(checked > 0 && checked === expected, `${checked} of ${expected} transport messages checked`);
  });
});

const samples: Message[] = [
  { type: "OPEN", cookie: 1, version: 1, mode: "push", hash: "hmac-sha256", blockSize: 65536, dryRun: false, clientZstd: true, size: 2 ** 40 + 3, key: new Uint8Array(32).fill(9), name: "vms/a.img" },
  { type: "SIGS", cookie: 2, offset: 65536, length: 5 * 65536 },
  { type: "DATA", cookie: 4, offset: 65536, length: 65536, payload: new Uint8Array(randomBytes(65536)), zstd: false },
  { type: "DATA", cookie: 4, offset: 0, length: 1 << 20, payload: new Uint8Array(randomBytes(MAX_PAYLOAD)), zstd: false },
  { type: "DATA", cookie: 4, offset: 0, length: 300, payload: new Uint8Array([1, 2]), zstd: true },
  { type: "DATA", cookie: 4, offset: 0, length: 300, payload: undefined, zstd: false },
  { type: "ZERO", cookie: 5, offset: 2 ** 50, length: 2 ** 40 },
  { type: "PATCH", cookie: 6, offset: 65536, length: 65536, data: new Uint8Array([0x05, 0]), zeros: new Uint8Array([0x02, 0]), payload: new Uint8Array(randomBytes(8192)), zstd: false },
  { type: "PATCH", cookie: 6, offset: 65536, length: 65536, data: new Uint8Array([0x01, 0]), zeros: new Uint8Array([0xfe, 0xff]), payload: undefined, zstd: false },
  { type: "ERROR", cookie: 10, code: "EBUSY", message: "Cannot lock x: another ssync is writing it" },
];

describe("encodeParts", () => {
  test("back to back, the parts are encode(msg); a DATA payload is the message's own buffer", T, () => {
    for (const m of samples) {
      const parts = encodeParts(m);
      assert.equal(toHex(joinRecord(parts)), toHex(encode(m)), m.type);
      assert.deepEqual(decode(joinRecord(parts)), m);
      if ((m.type === "DATA" || m.type === "PATCH") && m.payload !== undefined) {
        assert.ok(Array.isArray(parts), `${m.type} with a payload comes as parts`);
        const [header, payload] = parts as [Uint8Array, Uint8Array];
        assert.equal(header.length, HEADER_SIZE + (m.type === "PATCH" ? 2 * m.data.length : 0));
        assert.equal(payload, m.payload, "the payload is not copied");
      } else {
        assert.ok(parts instanceof Uint8Array, `${m.type} is one buffer`);
      }
    }
  });

  test("keeps encode's limit: a payload above MAX_PAYLOAD is refused", T, () => {
    const m: Message = { type: "DATA", cookie: 1, offset: 0, length: 1, payload: new Uint8Array(MAX_PAYLOAD + 1), zstd: true };
    assert.throws(() => encodeParts(m), /too large/);
  });
});

/** A connected TCP pair on 127.0.0.1. */
async function tcpPair(): Promise<{ client: Socket; server: Socket }> {
  const listener: Server = createServer({ pauseOnConnect: true });
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const accepted = once(listener, "connection");
  const client = connect((listener.address() as { port: number }).port, "127.0.0.1");
  await once(client, "connect");
  const [server] = (await accepted) as [Socket];
  listener.close();
  return { client, server };
}

/** Every byte a NoiseRecordChannel with this sending key writes for `records`, then END. */
async function wireBytes(key: Uint8Array, records: (Uint8Array | readonly Uint8Array[])[]): Promise<Buffer> {
  const { client, server } = await tcpPair();
  const chunks: Buffer[] = [];
  server.on("data", (c: Buffer) => chunks.push(c));
  const ended = once(server, "end");
  server.resume();
  const channel = new NoiseRecordChannel(client, {
    send: new CipherState(cipherFunction("ChaChaPoly"), key),
    receive: new CipherState(cipherFunction("ChaChaPoly"), randomBytes(32)),
    rekeyInterval: 3, // rekeys inside the run, as a long session does
  });
  for (const r of records) await channel.send(r);
  channel.close();
  await ended;
  server.destroy();
  await once(client, "close");
  return Buffer.concat(chunks);
}

describe("NoiseRecordChannel with parts", () => {
  test("the bytes on the wire are those of the records sent whole, and those of seal(encode(msg))", T, async () => {
    const key = randomBytes(32);
    const whole = await wireBytes(key, samples.map((m) => encode(m)));
    const parts = await wireBytes(key, samples.map((m) => encodeParts(m)));
    const odd = await wireBytes(key, samples.map((m) => splits(encode(m))[3]));
    // What the spec (§2) says, sealed by hand: word, ciphertext, tag; END last.
    const s = new CipherState(cipherFunction("ChaChaPoly"), key);
    const expected: Uint8Array[] = [];
    const frame = (plaintext: Uint8Array, end: boolean) => {
      const word = encodeRecordWord(plaintext.length + TAG_SIZE, end);
      const { ciphertext, tag } = s.seal(word, plaintext);
      expected.push(word, ciphertext, tag);
    };
    samples.forEach((m, i) => {
      frame(encode(m), false);
      if ((i + 1) % 3 === 0) s.rekey();
    });
    frame(new Uint8Array(0), true);
    assert.equal(whole.length, Buffer.concat(expected).length);
    assert.ok(whole.equals(Buffer.concat(expected)), "records sent whole are the spec's frames");
    assert.ok(parts.equals(whole), "encodeParts changes nothing on the wire");
    assert.ok(odd.equals(whole), "nor does any other split");
  });

  test("parts arrive as one record; a DATA payload is a view of the decrypted record", T, async () => {
    const { client, server } = await tcpPair();
    const [k1, k2] = [randomBytes(32), randomBytes(32)];
    const chacha = cipherFunction("ChaChaPoly");
    const a = new NoiseRecordChannel(client, { send: new CipherState(chacha, k1), receive: new CipherState(chacha, k2) });
    const b = new NoiseRecordChannel(server, { send: new CipherState(chacha, k2), receive: new CipherState(chacha, k1) });
    try {
      const data = samples.filter((m) => m.type === "DATA" && m.payload !== undefined && m.payload.length >= 65536);
      for (const m of data) void a.send(encodeParts(m));
      for (const m of data) {
        const rec = (await b.receive())!;
        assert.equal(rec.length, recordLength(encodeParts(m)));
        const got = decode(rec) as Extract<Message, { type: "DATA" }>;
        assert.deepEqual({ ...got, payload: undefined }, { ...m, payload: undefined });
        const payload = got.payload!;
        assert.equal(toHex(payload), toHex((m as { payload: Uint8Array }).payload));
        assert.equal(payload.buffer, rec.buffer, "no copy after decryption");
        assert.equal(payload.byteOffset, rec.byteOffset + HEADER_SIZE);
      }
    } finally {
      await Promise.all([a[Symbol.asyncDispose](), b[Symbol.asyncDispose]()]);
    }
  });

  test("parts longer than MAX_SLOT_RECORD together are refused locally; the channel lives on", T, async () => {
    const { client, server } = await tcpPair();
    const [k1, k2] = [randomBytes(32), randomBytes(32)];
    const chacha = cipherFunction("ChaChaPoly");
    const a = new NoiseRecordChannel(client, { send: new CipherState(chacha, k1), receive: new CipherState(chacha, k2) });
    const b = new NoiseRecordChannel(server, { send: new CipherState(chacha, k2), receive: new CipherState(chacha, k1) });
    try {
      await assert.rejects(a.send([new Uint8Array(SLOT_PREFIX_SIZE + HEADER_SIZE + 1), new Uint8Array(MAX_PAYLOAD)]), RangeError);
      await a.send([new Uint8Array(SLOT_PREFIX_SIZE + HEADER_SIZE), new Uint8Array(MAX_PAYLOAD)]);
      assert.equal((await b.receive())!.length, MAX_RECORD + SLOT_PREFIX_SIZE);
    } finally {
      await Promise.all([a[Symbol.asyncDispose](), b[Symbol.asyncDispose]()]);
    }
  });
});

describe("memory pair with parts", () => {
  test("one buffer is handed over as it is; parts are copied once, so the sender may reuse them", T, async () => {
    const [a, b] = memoryPair();
    const whole = encode(samples[1]);
    await a.send(whole);
    assert.equal(await b.receive(), whole, "a single buffer is not copied");
    const m = samples[2] as Extract<Message, { type: "DATA" }>;
    const payload = m.payload!.slice();
    const parts = encodeParts({ ...m, payload });
    await a.send(parts);
    payload.fill(0); // the sender reuses its buffer once send() resolved
    const rec = (await b.receive())!;
    assert.ok(rec instanceof Uint8Array);
    assert.deepEqual(decode(rec), m, "the peer got the bytes as they were sent");
    a.close();
    assert.equal(await b.receive(), null);
  });
});
