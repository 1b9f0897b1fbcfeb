/**
 * One-time pairing codes for first contact (XXpsk3).
 *
 * A code is 28 characters of RFC 4648 base32 (140 bits from the CSPRNG), shown in groups of
 * four: "ABCD-EFGH-...". Users may type it in any case, with or without dashes or spaces.
 * The normalised code (spec §1): ASCII letters upper-cased, every space (U+0020) and dash
 * (U+002D) removed; the result must be exactly PAIRING_CODE_LENGTH characters of the RFC 4648
 * base32 alphabet (A–Z, 2–7). Nothing else is accepted: no other white space, and no
 * non-ASCII letter that Unicode would upper-case into the alphabet ("ı" → "I", "ß" → "SS").
 * The pairing key is SHA-256(PAIRING_PSK_LABEL || normalised code as ASCII), spec §1.
 *
 * Invariant: a PairingOffer yields its key only while unused and unexpired; consume()
 * succeeds at most once.
 */
import { createHash, randomInt } from "node:crypto";
import { PAIRING_PSK_LABEL } from "../../protocol/constants.ts";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
export const PAIRING_CODE_LENGTH = 28;
export const PAIRING_TTL_MS = 10 * 60 * 1000;

/** A fresh code, grouped for reading aloud. */
export function newPairingCode(): string {
  let code = "";
  for (let i = 0; i < PAIRING_CODE_LENGTH; i++) code += ALPHABET[randomInt(32)];
  return code.match(/.{4}/g)!.join("-");
}

/** The normalised code (see above); throws when `text` cannot be a pairing code. */
export function normalizePairingCode(text: string): string {
  const code = text.replace(/[ -]/g, "").replace(/[a-z]/g, (c) => c.toUpperCase());
  if (code.length !== PAIRING_CODE_LENGTH || [...code].some((c) => !ALPHABET.includes(c))) {
    throw new Error(
      `Invalid pairing code "${text}": it is ${PAIRING_CODE_LENGTH} letters and digits 2-7, as printed by ssync listen --pair`,
    );
  }
  return code;
}

/** The 32-byte XXpsk3 key of a code. */
export function pairingKey(code: string): Uint8Array {
  return new Uint8Array(createHash("sha256").update(PAIRING_PSK_LABEL).update(normalizePairingCode(code)).digest());
}

export class PairingOffer {
  readonly code: string;
  readonly expiresAt: number;
  #key: Uint8Array;
  #used = false;
  #now: () => number;

  constructor(options: { code?: string; ttlMs?: number; now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.code = options.code ?? newPairingCode();
    this.#key = pairingKey(this.code);
    this.expiresAt = this.#now() + (options.ttlMs ?? PAIRING_TTL_MS);
  }

  get active(): boolean {
    return !this.#used && this.#now() < this.expiresAt;
  }

  /** The pairing key while the offer is active, else undefined (pairing refused). */
  get key(): Uint8Array | undefined {
    return this.active ? this.#key : undefined;
  }

  /** Marks the code used; false when it was already used or has expired. */
  consume(): boolean {
    if (!this.active) return false;
    this.#used = true;
    return true;
  }
}
