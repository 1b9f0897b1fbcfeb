import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { HandshakeState } from "../src/noise/handshake-state.ts";
import { CipherState, MAX_NONCE } from "../src/noise/cipher-state.ts";
import { cipherFunction, TAG_LENGTH } from "../src/noise/cipher-function.ts";
import { generateKeyPair, publicKeyOf } from "../src/noise/x25519.ts";
import { hashFunction, hmac } from "../src/noise/hash-function.ts";
import { createHmac } from "node:crypto";
import {
  PAIRING_PROTOCOL_NAME,
  PROTOCOL_NAME,
  TAG_SIZE,
  XX_MESSAGE_SIZES,
  XXPSK3_MESSAGE_SIZES,
} from "../protocol/constants.ts";

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
const toHex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const keyPair = (secret: string) => ({ secretKey: hex(secret), publicKey: publicKeyOf(hex(secret)) });

interface Vector {
  protocol_name: string;
  init_prologue: string;
  init_static: string;
  init_ephemeral: string;
  init_psks?: string[];
  resp_prologue: string;
  resp_static: string;
  resp_ephemeral: string;
  resp_psks?: string[];
  handshake_hash: string;
  messages: { payload: string; ciphertext: string }[];
}

// The shared folder sits beside the repository root (here and in CI).
const vectorsUrl = new URL("../../shared/vectors/noise-xx-25519.json", import.meta.url);
const vectors: Vector[] = JSON.parse(readFileSync(vectorsUrl, "utf8")).vectors;
const SUPPORTED = /^Noise_XX(psk3)?_25519_(ChaChaPoly|AESGCM)_(SHA256|SHA512|BLAKE2s|BLAKE2b)$/;
const TIMEOUT = { timeout: 10_000 };

function handshakePair(v: Vector) {
  const psk = (list?: string[]) => (list && list.length > 0 ? hex(list[0]) : undefined);
  const initiator = new HandshakeState(v.protocol_name, {
    initiator: true,
    prologue: hex(v.init_prologue),
    staticKeyPair: keyPair(v.init_static),
    ephemeralKeyPair: keyPair(v.init_ephemeral),
    psk: psk(v.init_psks),
  });
  const responder = new HandshakeState(v.protocol_name, {
    initiator: false,
    prologue: hex(v.resp_prologue),
    staticKeyPair: keyPair(v.resp_static),
    ephemeralKeyPair: keyPair(v.resp_ephemeral),
    psk: psk(v.resp_psks),
  });
  return { initiator, responder };
}

describe("Noise test vectors (cacophony)", () => {
  const chosen = vectors.filter((v) => SUPPORTED.test(v.protocol_name));

  test("the ssync suites are present", TIMEOUT, () => {
    const names = chosen.map((v) => v.protocol_name);
    assert.ok(names.includes("Noise_XX_25519_ChaChaPoly_SHA256"));
    assert.ok(names.includes("Noise_XXpsk3_25519_ChaChaPoly_SHA256"));
    assert.ok(names.includes("Noise_XX_25519_ChaChaPoly_BLAKE2b"));
    assert.ok(names.includes("Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"));
    assert.equal(chosen.length, vectors.length, "every vector in the file is supported");
  });

  for (const v of chosen) {
    test(v.protocol_name, TIMEOUT, () => {
      const { initiator, responder } = handshakePair(v);
      let send: CipherState[] = [];
      let receive: CipherState[] = [];
      v.messages.forEach((m, i) => {
        const fromInitiator = i % 2 === 0;
        const payload = hex(m.payload);
        if (i < 3) {
          const [writer, reader] = fromInitiator ? [initiator, responder] : [responder, initiator];
          assert.equal(writer.nextMessageLength(payload.length), m.ciphertext.length / 2, `length of message ${i}`);
          const message = writer.writeMessage(payload);
          assert.equal(toHex(message), m.ciphertext, `handshake message ${i}`);
          assert.deepEqual(toHex(reader.readMessage(message)), m.payload);
          if (i === 2) {
            assert.ok(initiator.isComplete() && responder.isComplete());
            assert.equal(toHex(initiator.handshakeHash()), v.handshake_hash);
            assert.equal(toHex(responder.handshakeHash()), v.handshake_hash);
            assert.deepEqual(initiator.remoteStatic, publicKeyOf(hex(v.resp_static)));
            assert.deepEqual(responder.remoteStatic, publicKeyOf(hex(v.init_static)));
            const a = initiator.split();
            const b = responder.split();
            send = [a.send, b.send];
            receive = [b.receive, a.receive];
          }
        } else {
          const side = fromInitiator ? 0 : 1;
          const ciphertext = send[side].encryptWithAd(new Uint8Array(0), payload);
          assert.equal(toHex(ciphertext), m.ciphertext, `transport message ${i}`);
          assert.equal(toHex(receive[side].decryptWithAd(new Uint8Array(0), ciphertext)), m.payload);
        }
      });
      assert.ok(v.messages.length > 3, "vector has transport messages");
    });
  }
});

const SUITE = PROTOCOL_NAME;
const PSK_SUITE = PAIRING_PROTOCOL_NAME;

function freshPair(name: string, psks: { init?: Uint8Array; resp?: Uint8Array } = {}) {
  return {
    initiator: new HandshakeState(name, { initiator: true, staticKeyPair: generateKeyPair(), psk: psks.init }),
    responder: new HandshakeState(name, { initiator: false, staticKeyPair: generateKeyPair(), psk: psks.resp }),
  };
}

describe("Noise handshake failures", () => {
  for (const index of [0, 1, 2]) {
    test(`a flipped bit in message ${index + 1} fails`, TIMEOUT, () => {
      const { initiator, responder } = freshPair(SUITE);
      const sides = [initiator, responder];
      for (let i = 0; i < 3; i++) {
        const message = sides[i % 2].writeMessage(new Uint8Array(0));
        if (i === index) {
          // Message 1 is only e: tampering with it shows up when message 2 is authenticated.
          message[message.length - 1] ^= 1;
          if (index === 0) {
            responder.readMessage(message);
            const reply = responder.writeMessage();
            assert.throws(() => initiator.readMessage(reply), /authentication failed/);
            return;
          }
          assert.throws(() => sides[(i + 1) % 2].readMessage(message), /authentication failed/);
          assert.throws(() => sides[(i + 1) % 2].writeMessage(), /already failed/);
          return;
        }
        sides[(i + 1) % 2].readMessage(message);
      }
    });
  }

  test("a wrong psk fails at message 3", TIMEOUT, () => {
    const psk = new Uint8Array(32).fill(7);
    const other = new Uint8Array(32).fill(8);
    const { initiator, responder } = freshPair(PSK_SUITE, { init: psk, resp: other });
    responder.readMessage(initiator.writeMessage());
    initiator.readMessage(responder.writeMessage());
    assert.throws(() => responder.readMessage(initiator.writeMessage()), /authentication failed/);
  });

  test("psk rules: required by XXpsk3, refused by XX", TIMEOUT, () => {
    assert.throws(() => new HandshakeState(PSK_SUITE, { initiator: true, staticKeyPair: generateKeyPair() }), /pre-shared key/);
    assert.throws(
      () => new HandshakeState(SUITE, { initiator: true, staticKeyPair: generateKeyPair(), psk: new Uint8Array(32) }),
      /no psk token/,
    );
  });

  test("a different prologue fails", TIMEOUT, () => {
    const initiator = new HandshakeState(SUITE, { initiator: true, staticKeyPair: generateKeyPair(), prologue: hex("01") });
    const responder = new HandshakeState(SUITE, { initiator: false, staticKeyPair: generateKeyPair(), prologue: hex("02") });
    responder.readMessage(initiator.writeMessage());
    assert.throws(() => initiator.readMessage(responder.writeMessage()), /authentication failed/);
  });

  for (const [name, point] of [
    ["zero", new Uint8Array(32)],
    ["one", hex("0100000000000000000000000000000000000000000000000000000000000000")],
    // A point of order 8 on Curve25519.
    ["order 8", hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")],
  ] as const) {
    test(`an all-zero DH output is rejected (peer ephemeral = low-order point ${name})`, TIMEOUT, () => {
      const { initiator, responder } = freshPair(SUITE);
      const message = initiator.writeMessage();
      message.set(point, 0);
      responder.readMessage(message);
      assert.throws(() => responder.writeMessage(), /low-order point/);
    });
  }

  test("a truncated message fails", TIMEOUT, () => {
    const { initiator, responder } = freshPair(SUITE);
    assert.throws(() => responder.readMessage(initiator.writeMessage().subarray(0, 31)), /need at least 32/);
  });

  test("handshake message lengths are the protocol's XX_MESSAGE_SIZES and XXPSK3_MESSAGE_SIZES", TIMEOUT, () => {
    assert.deepEqual([XX_MESSAGE_SIZES, XXPSK3_MESSAGE_SIZES], [[32, 96, 64], [48, 96, 64]]);
    assert.equal(TAG_LENGTH, TAG_SIZE, "the Noise tag is the record tag");
    for (const [name, lengths] of [[SUITE, XX_MESSAGE_SIZES], [PSK_SUITE, XXPSK3_MESSAGE_SIZES]] as const) {
      const psk = name === PSK_SUITE ? new Uint8Array(32) : undefined;
      const { initiator, responder } = freshPair(name, { init: psk, resp: psk });
      const sides = [initiator, responder];
      for (let i = 0; i < 3; i++) {
        assert.equal(sides[i % 2].nextMessageLength(), lengths[i]);
        assert.equal(sides[(i + 1) % 2].nextMessageLength(), lengths[i]);
        const m = sides[i % 2].writeMessage();
        assert.equal(m.length, lengths[i]);
        sides[(i + 1) % 2].readMessage(m);
      }
    }
  });
});

test("generic HMAC equals node:crypto HMAC for every hash, short and long keys", TIMEOUT, () => {
  for (const [name, node] of [["SHA256", "sha256"], ["SHA512", "sha512"], ["BLAKE2s", "blake2s256"], ["BLAKE2b", "blake2b512"]]) {
    for (const keyLength of [0, 32, 64, 65, 128, 129, 300]) {
      const key = new Uint8Array(keyLength).fill(0xa5);
      const data = [hex("0102"), hex("03")];
      const expected = createHmac(node, key).update(hex("010203")).digest("hex");
      assert.equal(toHex(hmac(hashFunction(name), { key, data })), expected, `${name} key ${keyLength}`);
    }
  }
});

describe("CipherState", () => {
  const key = new Uint8Array(32).fill(3);
  const chacha = cipherFunction("ChaChaPoly");
  const empty = new Uint8Array(0);

  test("refuses nonce 2^64-1 and accepts 2^64-2", TIMEOUT, () => {
    const a = new CipherState(chacha, key);
    const b = new CipherState(chacha, key);
    a.setNonce(MAX_NONCE - 1n);
    b.setNonce(MAX_NONCE - 1n);
    const c = a.encryptWithAd(empty, hex("aa"));
    assert.equal(toHex(b.decryptWithAd(empty, c)), "aa");
    assert.equal(a.nonce, MAX_NONCE);
    assert.throws(() => a.encryptWithAd(empty, hex("aa")), /nonce is exhausted/);
    assert.throws(() => b.decryptWithAd(empty, c), /nonce is exhausted/);
  });

  test("rekey: k = ENCRYPT(k, 2^64-1, empty, zeros)[0..32], n unchanged", TIMEOUT, () => {
    const a = new CipherState(chacha, key);
    a.encryptWithAd(empty, hex("00"));
    a.rekey();
    assert.equal(a.nonce, 1n);
    const manual = chacha.seal(chacha.importKey(key), MAX_NONCE, { ad: empty, plaintext: new Uint8Array(32) });
    const b = new CipherState(chacha, manual.ciphertext.subarray(0, 32));
    b.setNonce(1n);
    assert.equal(toHex(a.encryptWithAd(empty, hex("0102"))), toHex(b.encryptWithAd(empty, hex("0102"))));
  });

  test("a failed decryption does not advance the nonce", TIMEOUT, () => {
    const a = new CipherState(chacha, key);
    const b = new CipherState(chacha, key);
    const c = a.encryptWithAd(empty, hex("abcdef"));
    const bad = c.slice();
    bad[0] ^= 0x80;
    assert.throws(() => b.decryptWithAd(empty, bad), /authentication failed/);
    assert.equal(b.nonce, 0n);
    assert.equal(toHex(b.decryptWithAd(empty, c)), "abcdef");
    // Replaying the same ciphertext under the next nonce fails.
    assert.throws(() => b.decryptWithAd(empty, c), /authentication failed/);
  });
});
