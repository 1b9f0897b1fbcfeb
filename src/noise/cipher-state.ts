import { type CipherFunction, type CipherKey, TAG_LENGTH } from "./cipher-function.ts";

/** 2^64 - 1: reserved by Noise for REKEY; never used to encrypt a message. */
export const MAX_NONCE = 0xffff_ffff_ffff_ffffn;

const ZEROS_32 = new Uint8Array(32);
const EMPTY = new Uint8Array(0);

/**
 * Noise CipherState (spec rev 34, section 5.1): a key k (or none) and a counter nonce n.
 *
 * Invariants: n only grows, by one per successful encryption or decryption; a nonce is
 * never used twice with one key; n = 2^64-1 is refused (the channel must be closed before).
 * A failed decryption leaves n unchanged, but callers of the record layer treat it as fatal.
 */
export class CipherState {
  readonly cipher: CipherFunction;
  #key: CipherKey | null = null;
  #n = 0n;

  constructor(cipher: CipherFunction, key?: Uint8Array) {
    this.cipher = cipher;
    if (key !== undefined) this.initializeKey(key);
  }

  initializeKey(key: Uint8Array | null): void {
    this.#key = key === null ? null : this.cipher.importKey(key);
    this.#n = 0n;
  }

  hasKey(): boolean {
    return this.#key !== null;
  }

  /** The next nonce to be used. */
  get nonce(): bigint {
    return this.#n;
  }

  /** SetNonce(n): for tests and for protocols with explicit nonces. */
  setNonce(n: bigint): void {
    if (n < 0n || n > MAX_NONCE) throw new RangeError(`Cannot set nonce ${n}: out of the 64-bit range`);
    this.#n = n;
  }

  #takeNonce(): bigint {
    if (this.#n >= MAX_NONCE) {
      throw new Error("Cannot use this cipher state: its 64-bit nonce is exhausted (2^64-1 is reserved)");
    }
    return this.#n;
  }

  /** EncryptWithAd(ad, plaintext): ciphertext || tag; returns plaintext unchanged if there is no key. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#key === null) return plaintext;
    const { ciphertext, tag } = this.seal(ad, plaintext);
    const out = new Uint8Array(ciphertext.length + TAG_LENGTH);
    out.set(ciphertext);
    out.set(tag, ciphertext.length);
    return out;
  }

  /** DecryptWithAd(ad, ciphertext || tag); throws if authentication fails. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#key === null) return ciphertext;
    if (ciphertext.length < TAG_LENGTH) throw new Error("Cannot decrypt: message shorter than its authentication tag");
    const end = ciphertext.length - TAG_LENGTH;
    return this.open(ad, { ciphertext: ciphertext.subarray(0, end), tag: ciphertext.subarray(end) });
  }

  /** Like encryptWithAd with a key, but keeps the tag apart (no concatenation). */
  seal(ad: Uint8Array, plaintext: Uint8Array): { ciphertext: Uint8Array; tag: Uint8Array } {
    if (this.#key === null) throw new Error("Cannot encrypt: the cipher state has no key");
    const sealed = this.cipher.seal(this.#key, this.#takeNonce(), { ad, plaintext });
    this.#n++;
    return sealed;
  }

  /** Like seal over the parts back to back, without concatenating them (one ciphertext per non-empty part). */
  sealParts(ad: Uint8Array, parts: readonly Uint8Array[]): { ciphertext: Uint8Array[]; tag: Uint8Array } {
    if (this.#key === null) throw new Error("Cannot encrypt: the cipher state has no key");
    const sealed = this.cipher.sealParts(this.#key, this.#takeNonce(), { ad, parts });
    this.#n++;
    return sealed;
  }

  /** Like decryptWithAd with a key, with the tag apart; n advances only on success. */
  open(ad: Uint8Array, parts: { ciphertext: Uint8Array; tag: Uint8Array }): Uint8Array {
    if (this.#key === null) throw new Error("Cannot decrypt: the cipher state has no key");
    const plaintext = this.cipher.open(this.#key, this.#takeNonce(), { ad, ...parts });
    this.#n++;
    return plaintext;
  }

  /** Rekey(): k = first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, zeros[32]); n is unchanged. */
  rekey(): void {
    if (this.#key === null) throw new Error("Cannot rekey: the cipher state has no key");
    const { ciphertext } = this.cipher.seal(this.#key, MAX_NONCE, { ad: EMPTY, plaintext: ZEROS_32 });
    this.#key = this.cipher.importKey(ciphertext.subarray(0, 32));
  }
}
