import nacl from "tweetnacl";

/** An X25519 key pair: 32-byte public key and 32-byte private scalar. */
export interface KeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

/** DHLEN for Curve25519. */
export const DH_LENGTH = 32;

/** GENERATE_KEYPAIR() for 25519, from tweetnacl's CSPRNG. */
export function generateKeyPair(): KeyPair {
  const secretKey = nacl.randomBytes(32);
  return { publicKey: nacl.scalarMult.base(secretKey), secretKey };
}

/** The X25519 public key of a private scalar. */
export function publicKeyOf(secretKey: Uint8Array): Uint8Array {
  if (secretKey.length !== 32) throw new RangeError(`Cannot use a ${secretKey.length}-byte X25519 private key: it must be 32 bytes`);
  return nacl.scalarMult.base(secretKey);
}

/**
 * DH(keyPair, publicKey) = X25519. Rejects an all-zero output, which means the peer's key
 * is a low-order point: such a "shared secret" is known to everyone (Noise spec section 12.1
 * allows either behaviour; ssync refuses). The zero test does not branch on secret bytes.
 */
export function dh(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  if (publicKey.length !== 32) throw new Error(`Cannot do X25519: the peer's key is ${publicKey.length} bytes, not 32`);
  const shared = nacl.scalarMult(secretKey, publicKey);
  let acc = 0;
  for (let i = 0; i < shared.length; i++) acc |= shared[i];
  if (acc === 0) throw new Error("Cannot do X25519: the peer's key is a low-order point (all-zero shared secret)");
  return shared;
}
