import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from "node:crypto";

/** The AEAD tag length of every Noise cipher. */
export const TAG_LENGTH = 16;

/** A Noise cipher key prepared for repeated use (importing a key costs more than a small record). */
export type CipherKey = KeyObject;

/**
 * A Noise cipher function (spec rev 34, section 4.2): AEAD with a 32-byte key and a
 * 64-bit counter nonce. `seal`/`open` keep the tag apart so that the record layer can
 * write and read it without concatenating buffers.
 */
export interface CipherFunction {
  /** "ChaChaPoly" or "AESGCM". */
  readonly name: string;
  importKey(key: Uint8Array): CipherKey;
  /** ENCRYPT(k, n, ad, plaintext), returned as ciphertext and 16-byte tag. */
  seal(key: CipherKey, n: bigint, options: { ad: Uint8Array; plaintext: Uint8Array }): {
    ciphertext: Uint8Array;
    tag: Uint8Array;
  };
  /**
   * ENCRYPT(k, n, ad, parts[0] || parts[1] || …) without concatenating the parts: one
   * ciphertext per non-empty part (back to back they are seal's ciphertext), then the tag.
   */
  sealParts(key: CipherKey, n: bigint, options: { ad: Uint8Array; parts: readonly Uint8Array[] }): {
    ciphertext: Uint8Array[];
    tag: Uint8Array;
  };
  /** DECRYPT(k, n, ad, ciphertext || tag); throws if authentication fails. */
  open(key: CipherKey, n: bigint, options: { ad: Uint8Array; ciphertext: Uint8Array; tag: Uint8Array }): Uint8Array;
}

function makeCipher(name: string, algorithm: string, littleEndian: boolean): CipherFunction {
  // Nonce: 32 bits of zeros, then the 64-bit counter (little-endian for ChaChaPoly,
  // big-endian for AESGCM), as the Noise spec (section 12) fixes.
  function nonce(n: bigint): Buffer {
    const iv = Buffer.alloc(12);
    if (littleEndian) iv.writeBigUInt64LE(n, 4);
    else iv.writeBigUInt64BE(n, 4);
    return iv;
  }
  return {
    name,
    importKey(key: Uint8Array): CipherKey {
      if (key.length !== 32) throw new RangeError(`Cannot use a ${key.length}-byte cipher key: Noise keys are 32 bytes`);
      return createSecretKey(key);
    },
    seal(key, n, { ad, plaintext }) {
      // deno-lint-ignore no-explicit-any
      const cipher = createCipheriv(algorithm as any, key, nonce(n), { authTagLength: TAG_LENGTH });
      cipher.setAAD(ad, { plaintextLength: plaintext.length });
      const ciphertext = plaintext.length === 0 ? new Uint8Array(0) : cipher.update(plaintext);
      cipher.final();
      return { ciphertext, tag: cipher.getAuthTag() };
    },
    sealParts(key, n, { ad, parts }) {
      let length = 0;
      for (const part of parts) length += part.length;
      // deno-lint-ignore no-explicit-any
      const cipher = createCipheriv(algorithm as any, key, nonce(n), { authTagLength: TAG_LENGTH });
      cipher.setAAD(ad, { plaintextLength: length });
      // The AEAD is a stream: update() over each part continues where the last one ended.
      const ciphertext: Uint8Array[] = [];
      for (const part of parts) if (part.length > 0) ciphertext.push(cipher.update(part));
      cipher.final();
      return { ciphertext, tag: cipher.getAuthTag() };
    },
    open(key, n, { ad, ciphertext, tag }) {
      if (tag.length !== TAG_LENGTH) throw new Error("Cannot decrypt: the authentication tag is truncated");
      // deno-lint-ignore no-explicit-any
      const decipher = createDecipheriv(algorithm as any, key, nonce(n), { authTagLength: TAG_LENGTH });
      decipher.setAAD(ad, { plaintextLength: ciphertext.length });
      decipher.setAuthTag(tag);
      const plaintext = ciphertext.length === 0 ? new Uint8Array(0) : decipher.update(ciphertext);
      try {
        decipher.final();
      } catch {
        throw new Error("Cannot decrypt: authentication failed (tampered, replayed or wrongly keyed data)");
      }
      return plaintext;
    },
  };
}

const CIPHERS: Record<string, CipherFunction> = {
  ChaChaPoly: makeCipher("ChaChaPoly", "chacha20-poly1305", true),
  AESGCM: makeCipher("AESGCM", "aes-256-gcm", false),
};

/** Returns the Noise cipher function called `name`, or throws if ssync does not support it. */
export function cipherFunction(name: string): CipherFunction {
  const cipher = Object.hasOwn(CIPHERS, name) ? CIPHERS[name] : undefined;
  if (cipher === undefined) {
    throw new Error(`Cannot use Noise cipher "${name}": supported are ${Object.keys(CIPHERS).join(", ")}`);
  }
  return cipher;
}
