import { createHash } from "node:crypto";

/**
 * A Noise hash function (spec rev 34, section 4.3) with the HMAC and HKDF built on it.
 * HMAC is written generically over the hash so that every Noise hash gets the same,
 * spec-defined construction on both Deno and Node.
 */
export interface HashFunction {
  /** The name used in Noise protocol names: "SHA256", "SHA512", "BLAKE2s", "BLAKE2b". */
  readonly name: string;
  /** HASHLEN: digest length in bytes (32 or 64). */
  readonly hashLen: number;
  /** BLOCKLEN: the block length used by HMAC (64 or 128). */
  readonly blockLen: number;
  /** HASH(parts[0] || parts[1] || ...). */
  hash(...parts: Uint8Array[]): Uint8Array;
}

const HASHES: Record<string, { node: string; hashLen: number; blockLen: number }> = {
  SHA256: { node: "sha256", hashLen: 32, blockLen: 64 },
  SHA512: { node: "sha512", hashLen: 64, blockLen: 128 },
  BLAKE2s: { node: "blake2s256", hashLen: 32, blockLen: 64 },
  BLAKE2b: { node: "blake2b512", hashLen: 64, blockLen: 128 },
};

/** Returns the Noise hash function called `name`, or throws if ssync does not support it. */
export function hashFunction(name: string): HashFunction {
  const spec = Object.hasOwn(HASHES, name) ? HASHES[name] : undefined;
  if (spec === undefined) {
    throw new Error(`Cannot use Noise hash "${name}": supported are ${Object.keys(HASHES).join(", ")}`);
  }
  return {
    name,
    hashLen: spec.hashLen,
    blockLen: spec.blockLen,
    hash(...parts: Uint8Array[]): Uint8Array {
      const h = createHash(spec.node);
      for (const part of parts) h.update(part);
      return new Uint8Array(h.digest());
    },
  };
}

/** HMAC-HASH(key, data[0] || data[1] || ...) per RFC 2104, as Noise defines it. */
export function hmac(hash: HashFunction, options: { key: Uint8Array; data: Uint8Array[] }): Uint8Array {
  const { key, data } = options;
  const padded = new Uint8Array(hash.blockLen);
  padded.set(key.length > hash.blockLen ? hash.hash(key) : key);
  const ipad = new Uint8Array(hash.blockLen);
  const opad = new Uint8Array(hash.blockLen);
  for (let i = 0; i < hash.blockLen; i++) {
    ipad[i] = padded[i] ^ 0x36;
    opad[i] = padded[i] ^ 0x5c;
  }
  return hash.hash(opad, hash.hash(ipad, ...data));
}

/**
 * HKDF(chainingKey, inputKeyMaterial, numOutputs) from the Noise spec (section 4.3):
 * returns 2 or 3 outputs of HASHLEN bytes each.
 */
export function hkdf(
  hash: HashFunction,
  chainingKey: Uint8Array,
  options: { ikm: Uint8Array; outputs: 2 | 3 },
): Uint8Array[] {
  const key = hmac(hash, { key: chainingKey, data: [options.ikm] });
  const out1 = hmac(hash, { key, data: [Uint8Array.of(1)] });
  const out2 = hmac(hash, { key, data: [out1, Uint8Array.of(2)] });
  if (options.outputs === 2) return [out1, out2];
  return [out1, out2, hmac(hash, { key, data: [out2, Uint8Array.of(3)] })];
}
