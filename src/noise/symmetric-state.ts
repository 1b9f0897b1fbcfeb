import type { CipherFunction } from "./cipher-function.ts";
import { CipherState } from "./cipher-state.ts";
import { type HashFunction, hkdf } from "./hash-function.ts";

/**
 * Noise SymmetricState (spec rev 34, section 5.2): chaining key ck, handshake hash h and
 * the handshake CipherState.
 *
 * Invariant: h commits to everything sent or received so far (prologue, keys, ciphertexts).
 */
export class SymmetricState {
  readonly hash: HashFunction;
  readonly cipher: CipherFunction;
  readonly cipherState: CipherState;
  #ck: Uint8Array;
  #h: Uint8Array;

  /** InitializeSymmetric(protocolName). */
  constructor(protocolName: string, options: { hash: HashFunction; cipher: CipherFunction }) {
    this.hash = options.hash;
    this.cipher = options.cipher;
    const name = new TextEncoder().encode(protocolName);
    if (name.length <= this.hash.hashLen) {
      this.#h = new Uint8Array(this.hash.hashLen);
      this.#h.set(name);
    } else {
      this.#h = this.hash.hash(name);
    }
    this.#ck = this.#h;
    this.cipherState = new CipherState(this.cipher);
  }

  /** Keys from HKDF are HASHLEN bytes; cipher keys are the first 32. */
  #truncate(key: Uint8Array): Uint8Array {
    return key.subarray(0, 32);
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, tempK] = hkdf(this.hash, this.#ck, { ikm, outputs: 2 });
    this.#ck = ck;
    this.cipherState.initializeKey(this.#truncate(tempK));
  }

  mixHash(data: Uint8Array): void {
    this.#h = this.hash.hash(this.#h, data);
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, tempH, tempK] = hkdf(this.hash, this.#ck, { ikm, outputs: 3 });
    this.#ck = ck;
    this.mixHash(tempH);
    this.cipherState.initializeKey(this.#truncate(tempK));
  }

  handshakeHash(): Uint8Array {
    return this.#h;
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipherState.encryptWithAd(this.#h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipherState.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /** Split(): the initiator→responder and responder→initiator transport CipherStates. */
  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.hash, this.#ck, { ikm: new Uint8Array(0), outputs: 2 });
    return [
      new CipherState(this.cipher, this.#truncate(k1)),
      new CipherState(this.cipher, this.#truncate(k2)),
    ];
  }
}
