/** authorized_keys and known_hosts writable by group or others are refused (StrictModes). */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { readAuthorizedKeys } from "../src/trust/authorized-keys.ts";
import { formatPublicKey } from "../src/trust/keys.ts";
import { lookupKnownHost } from "../src/trust/known-hosts.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { describeError } from "../src/cli/exit-code.ts";
import { RemoteError } from "../src/util/errors.ts";
import { withTempDir } from "./helpers/sparse.ts";

test("trust files writable by others are refused; private ones are read", { timeout: 10_000 }, async () => {
  await withTempDir(async (dir) => {
    const pk = generateKeyPair().publicKey;
    const ak = path.join(dir, "authorized_keys");
    fs.writeFileSync(ak, formatPublicKey(pk, { comment: "t" }) + "\n", { mode: 0o600 });
    fs.chmodSync(ak, 0o600);
    assert.equal((await readAuthorizedKeys(ak)).length, 1);
    fs.chmodSync(ak, 0o620);
    await assert.rejects(readAuthorizedKeys(ak), /Refusing authorized keys .*writable by group or others \(mode 0620\)/);
    const kh = path.join(dir, "known_hosts");
    fs.writeFileSync(kh, "");
    fs.chmodSync(kh, 0o646);
    await assert.rejects(lookupKnownHost(kh, { host: "h", port: 1, publicKey: pk }), /Refusing known hosts .*mode 0646/);
  });
});

test("a peer's control characters are printed escaped", () => {
  const line = describeError(new RemoteError("EIO", "bad\nssync: fake line\x1b[31m"));
  assert.equal(line.includes("\n"), false);
  assert.equal(line.includes("\x1b"), false);
  assert.match(line, /bad\\u000assync: fake line\\u001b\[31m/);
});
