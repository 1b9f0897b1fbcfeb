import { test } from "node:test";
import assert from "node:assert/strict";
import { newPairingCode, normalizePairingCode, PAIRING_CODE_LENGTH, PairingOffer, pairingKey } from "../src/trust/pairing-code.ts";
import { createHash } from "node:crypto";
import { PAIRING_PSK_LABEL } from "../protocol/constants.ts";

const T = { timeout: 10_000 };

test("pairing codes carry at least 128 bits and normalize case and separators", T, () => {
  const code = newPairingCode();
  assert.match(code, /^([A-Z2-7]{4}-){6}[A-Z2-7]{4}$/);
  assert.ok(PAIRING_CODE_LENGTH * 5 >= 128);
  assert.notEqual(newPairingCode(), code);
  const plain = code.replace(/-/g, "");
  assert.equal(normalizePairingCode(code.toLowerCase()), plain);
  assert.equal(normalizePairingCode(plain.match(/.{7}/g)!.join(" ")), plain);
  assert.deepEqual(pairingKey(code), pairingKey(code.toLowerCase().replace(/-/g, " ")));
  assert.equal(pairingKey(code).length, 32);
  assert.throws(() => normalizePairingCode(plain.slice(1)), /Invalid pairing code/);
  assert.throws(() => normalizePairingCode(plain.slice(1) + "1"), /Invalid pairing code/);
});

test("the normalised code: ASCII upper-cased, spaces and dashes removed, 28 base32 characters", T, () => {
  const normalised = "ABCDEFGHIJKLMNOPQRSTUVWXYZ23";
  assert.equal(normalised.length, PAIRING_CODE_LENGTH);
  for (const typed of [normalised, normalised.toLowerCase(), "abcd-efgh-ijkl-mnop-qrst-uvwx-yz23", " AbCd EFGH--ijkl mnop qrst uvwx yz23 "]) {
    assert.equal(normalizePairingCode(typed), normalised);
  }
  // psk = SHA-256(PAIRING_PSK_LABEL || normalised code), spec §1.
  const expected = createHash("sha256").update(Buffer.concat([Buffer.from(PAIRING_PSK_LABEL), Buffer.from(normalised, "ascii")])).digest();
  assert.deepEqual(Buffer.from(pairingKey("abcd-efgh-ijkl-mnop-qrst-uvwx-yz23")), expected);
  // Anything the definition does not name is refused, even where Unicode would map it into
  // the alphabet (dotless i, long s, sharp s) or call it white space.
  const refused = [
    normalised.replace("I", "\u0131"), // ı upper-cases to I
    normalised.replace("S", "\u017f"), // ſ upper-cases to S
    normalised.slice(0, 26) + "\u00df", // ß upper-cases to SS: 28 characters again
    normalised.slice(0, 4) + "\t" + normalised.slice(4),
    normalised.slice(0, 4) + "\u00a0" + normalised.slice(4), // no-break space
    normalised.slice(0, 4) + "\u2010" + normalised.slice(4), // Unicode hyphen
    normalised.slice(0, 27) + "1",
    normalised.slice(0, 27) + "=",
    normalised + "A",
    normalised.slice(1),
  ];
  for (const text of refused) assert.throws(() => normalizePairingCode(text), /Invalid pairing code/, JSON.stringify(text));
});

test("a pairing offer is single use and expires", T, () => {
  let now = 1000;
  const offer = new PairingOffer({ ttlMs: 600_000, now: () => now });
  assert.ok(offer.key);
  assert.equal(offer.consume(), true);
  assert.equal(offer.key, undefined);
  assert.equal(offer.consume(), false);
  const later = new PairingOffer({ ttlMs: 600_000, now: () => now });
  now += 600_000;
  assert.equal(later.key, undefined);
  assert.equal(later.consume(), false);
});
