/**
 * The sealed update's cryptography (spec §9.3): one key from two X25519 exchanges, then
 * ChaCha20-Poly1305 over fixed-size chunks (the STREAM construction). No new primitive:
 * X25519 from tweetnacl (x25519.ts), HKDF-SHA-256, SHA-256 and ChaCha20-Poly1305 from
 * node:crypto.
 *
 * 1. The sender makes an ephemeral key pair e; es = X25519(e, R), ss = X25519(S, R), where S
 *    is its static key and R the recipient's. The recipient computes the same with its
 *    private key: es = X25519(R, e), ss = X25519(R, S).
 * 2. key = HKDF-SHA-256(ikm = es ‖ ss, salt = SHA-256(clear header), info = UPDATE_KEY_INFO).
 *    The salt binds the header (recipient, sender and ephemeral keys, version): a changed
 *    header byte gives another key, so the first chunk fails.
 * 3. Chunk i (from 0): nonce = u32 last ‖ u64 i, additional data = its 4-byte word (last
 *    flag and length). A dropped, repeated, reordered or spliced chunk, a cleared or moved
 *    "last" flag, any flipped bit fails its tag.
 *
 * Invariants: only the holder of R's private key can read; only the holders of S's (or R's)
 * private key can make a chunk that opens (ss). The counter never wraps: a stream stops far
 * before 2^64 chunks.
 */
import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, createHash, hkdfSync } from "node:crypto";
import {
  CHUNK_LAST_FLAG,
  CHUNK_TAG_SIZE,
  CHUNK_WORD_SIZE,
  OfflineFormatError,
  UPDATE_CHUNK_SIZE,
  UPDATE_KEY_INFO,
} from "../../protocol/offline-format.ts";
import { dh, generateKeyPair, type KeyPair } from "./x25519.ts";

function streamKey(header: Uint8Array, es: Uint8Array, ss: Uint8Array): Uint8Array {
  const ikm = Buffer.concat([es, ss]);
  const salt = createHash("sha256").update(header).digest();
  return new Uint8Array(hkdfSync("sha256", ikm, salt, UPDATE_KEY_INFO, 32));
}

/** The sender's ephemeral key pair, made before the header (which carries its public half). */
export function ephemeralKeyPair(): KeyPair {
  return generateKeyPair();
}

/** The sender's stream key. */
export function senderKey(o: { header: Uint8Array; sender: KeyPair; ephemeral: KeyPair; recipient: Uint8Array }): Uint8Array {
  return streamKey(o.header, dh(o.ephemeral.secretKey, o.recipient), dh(o.sender.secretKey, o.recipient));
}

/** The recipient's stream key. */
export function recipientKey(o: { header: Uint8Array; recipient: KeyPair; sender: Uint8Array; ephemeral: Uint8Array }): Uint8Array {
  return streamKey(o.header, dh(o.recipient.secretKey, o.ephemeral), dh(o.recipient.secretKey, o.sender));
}

function nonce(counter: bigint, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(last ? 1 : 0, 0);
  n.writeBigUInt64BE(counter, 4);
  return n;
}

function word(length: number, last: boolean): Buffer {
  const w = Buffer.alloc(CHUNK_WORD_SIZE);
  w.writeUInt32BE((length | (last ? CHUNK_LAST_FLAG : 0)) >>> 0, 0);
  return w;
}

/** Seals chunks in order: each call gives the chunk's word and ciphertext, ready to write. */
export class ChunkSealer {
  readonly #key: Uint8Array;
  #counter = 0n;
  #ended = false;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  seal(plain: Uint8Array, last: boolean): Uint8Array {
    if (this.#ended) throw new Error("Cannot seal a chunk after the last one");
    if (plain.length === 0 || plain.length > UPDATE_CHUNK_SIZE) throw new RangeError(`Cannot seal a chunk of ${plain.length} bytes`);
    const w = word(plain.length + CHUNK_TAG_SIZE, last);
    const c = createCipheriv("chacha20-poly1305", this.#key, nonce(this.#counter++, last), { authTagLength: CHUNK_TAG_SIZE });
    c.setAAD(w, { plaintextLength: plain.length });
    const body = c.update(plain);
    c.final();
    if (last) this.#ended = true;
    return Buffer.concat([w, body, c.getAuthTag()]);
  }
}

/** Opens chunks in order; throws OfflineFormatError on a chunk that fails to authenticate. */
export class ChunkOpener {
  readonly #key: Uint8Array;
  #counter = 0n;
  #ended = false;

  constructor(key: Uint8Array) {
    this.#key = key;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** `ciphertext`: the chunk after its word (plaintext ‖ tag), `word` as read. */
  open(wordValue: number, ciphertext: Uint8Array): Uint8Array {
    if (this.#ended) throw new OfflineFormatError("data after the last chunk");
    const last = (wordValue & CHUNK_LAST_FLAG) !== 0;
    const w = Buffer.alloc(CHUNK_WORD_SIZE);
    w.writeUInt32BE(wordValue >>> 0, 0);
    const n = this.#counter++;
    const d = createDecipheriv("chacha20-poly1305", this.#key, nonce(n, last), { authTagLength: CHUNK_TAG_SIZE });
    const body = ciphertext.subarray(0, ciphertext.length - CHUNK_TAG_SIZE);
    d.setAAD(w, { plaintextLength: body.length });
    d.setAuthTag(ciphertext.subarray(ciphertext.length - CHUNK_TAG_SIZE));
    const plain = d.update(body);
    try {
      d.final();
    } catch {
      throw new OfflineFormatError(`chunk ${n} fails to authenticate (the file is damaged, or was not sealed by its sender for this key)`);
    }
    if (last) this.#ended = true;
    return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
  }
}
