import { type CipherFunction, cipherFunction } from "./cipher-function.ts";
import { type HashFunction, hashFunction } from "./hash-function.ts";

/** A handshake token (spec rev 34, section 7). */
export type Token = "e" | "s" | "ee" | "es" | "se" | "ss" | "psk";

/** The message patterns, initiator first, alternating. No pre-messages (XX has none). */
const PATTERNS: Record<string, Token[][]> = {
  XX: [["e"], ["e", "ee", "s", "es"], ["s", "se"]],
  XXpsk3: [["e"], ["e", "ee", "s", "es"], ["s", "se", "psk"]],
};

/** A parsed Noise protocol name such as Noise_XX_25519_ChaChaPoly_SHA256. */
export interface NoiseProtocol {
  readonly name: string;
  readonly patternName: string;
  readonly messages: readonly (readonly Token[])[];
  /** True when the pattern has psk tokens: "e" then also does MixKey (section 9.2). */
  readonly pskMode: boolean;
  readonly cipher: CipherFunction;
  readonly hash: HashFunction;
}

/** Parses a Noise protocol name; only XX and XXpsk3 over 25519 are supported. */
export function parseProtocolName(name: string): NoiseProtocol {
  const parts = name.split("_");
  if (parts.length !== 5 || parts[0] !== "Noise") {
    throw new Error(`Cannot parse Noise protocol name "${name}": expected Noise_PATTERN_DH_CIPHER_HASH`);
  }
  const [, patternName, dhName, cipherName, hashName] = parts;
  const messages = Object.hasOwn(PATTERNS, patternName) ? PATTERNS[patternName] : undefined;
  if (messages === undefined) {
    throw new Error(`Cannot use Noise pattern "${patternName}": supported are ${Object.keys(PATTERNS).join(", ")}`);
  }
  if (dhName !== "25519") throw new Error(`Cannot use Noise DH "${dhName}": only 25519 is supported`);
  return {
    name,
    patternName,
    messages,
    pskMode: messages.some((m) => m.includes("psk")),
    cipher: cipherFunction(cipherName),
    hash: hashFunction(hashName),
  };
}
