import { test } from "node:test";
import assert from "node:assert/strict";
import { newPairingCode, normalizePairingCode, PAIRING_CODE_LENGTH, PairingOffer, pairingKey } from "../src/trust/pairing-code.ts";
import { formatEndpoint, parseEndpoint } from "../src/net/host-port.ts";

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

test("endpoints: HOST[:PORT][:PATH], IPv6 in brackets", T, () => {
  assert.deepEqual(parseEndpoint("backup"), { host: "backup", port: 7070, path: undefined });
  assert.deepEqual(parseEndpoint("backup:7000"), { host: "backup", port: 7000, path: undefined });
  assert.deepEqual(parseEndpoint("backup:vm/a.img"), { host: "backup", port: 7070, path: "vm/a.img" });
  assert.deepEqual(parseEndpoint("backup:7000:vm/a.img"), { host: "backup", port: 7000, path: "vm/a.img" });
  assert.deepEqual(parseEndpoint("[::1]:7000:a:b"), { host: "::1", port: 7000, path: "a:b" });
  assert.deepEqual(parseEndpoint("[fe80::1]"), { host: "fe80::1", port: 7070, path: undefined });
  assert.deepEqual(parseEndpoint("[::1]:x.img"), { host: "::1", port: 7070, path: "x.img" });
  assert.throws(() => parseEndpoint("[::1"), /missing "\]"/);
  assert.throws(() => parseEndpoint("h:70000:x"), /Invalid port/);
  assert.throws(() => parseEndpoint(":7000"), /no host/);
  assert.equal(formatEndpoint({ host: "::1", port: 1 }), "[::1]:1");
});
