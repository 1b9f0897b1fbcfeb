import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeKey, fingerprint, formatPublicKey, parsePublicKey, readPrivateKey, writePrivateKey } from "../src/trust/keys.ts";
import { addKnownHost, knownHostName, lookupKnownHost } from "../src/trust/known-hosts.ts";
import { findAuthorizedKey, parseAuthorizedKeys, readAuthorizedKeys } from "../src/trust/authorized-keys.ts";
import { configDir } from "../src/trust/config-dir.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";

const T = { timeout: 10_000 };
const b64 = (k: Uint8Array) => Buffer.from(k).toString("base64");

function tempDir(): { dir: string; [Symbol.dispose](): void } {
  const dir = mkdtempSync(join(tmpdir(), "ssync-keys-"));
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
}

describe("key files", () => {
  test("write then read a private key; public file and mode 0600", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "sub", "key");
      const pair = generateKeyPair();
      await writePrivateKey(path, pair, { comment: "me@host" });
      assert.equal(statSync(path).mode & 0o777, 0o600);
      const text = readFileSync(path, "utf8");
      assert.match(text, /^ssync-private-key v1\n[A-Za-z0-9+/]{43}=\n$/);
      const read = await readPrivateKey(path);
      assert.deepEqual(Buffer.from(read.secretKey), Buffer.from(pair.secretKey));
      assert.deepEqual(Buffer.from(read.publicKey), Buffer.from(pair.publicKey));
      const pub = readFileSync(path + ".pub", "utf8");
      assert.equal(pub, `ssync-x25519 ${b64(pair.publicKey)} me@host\n`);
      assert.deepEqual(Buffer.from(parsePublicKey(pub).publicKey), Buffer.from(pair.publicKey));
      assert.equal(parsePublicKey(pub).comment, "me@host");
    } finally {
      t[Symbol.dispose]();
    }
  });

  test("refuses to overwrite an existing key", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "key");
      writeFileSync(path, "precious");
      await assert.rejects(writePrivateKey(path, generateKeyPair()), /Cannot write key .*already exists/);
      assert.equal(readFileSync(path, "utf8"), "precious");
    } finally {
      t[Symbol.dispose]();
    }
  });

  test("refuses a key file others can access", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "key");
      await writePrivateKey(path, generateKeyPair());
      chmodSync(path, 0o644);
      await assert.rejects(
        readPrivateKey(path),
        { message: `Refusing key ${path}: it is readable by others (mode 0644); run chmod 600 ${path}` },
      );
      chmodSync(path, 0o620);
      await assert.rejects(readPrivateKey(path), /accessible by others \(mode 0620\)/);
      chmodSync(path, 0o400);
      await readPrivateKey(path);
    } finally {
      t[Symbol.dispose]();
    }
  });

  test("refuses malformed key files", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "key");
      for (const text of ["", "ssync-private-key v2\nAAAA\n", "ssync-private-key v1\nAAAA\n", `ssync-private-key v1\n${b64(new Uint8Array(32))}\nextra\n`]) {
        writeFileSync(path, text, { mode: 0o600 });
        chmodSync(path, 0o600);
        await assert.rejects(readPrivateKey(path), /Cannot read key/);
      }
      await assert.rejects(readPrivateKey(join(t.dir, "missing")), /Cannot read key .*no such file/);
    } finally {
      t[Symbol.dispose]();
    }
  });

  test("fingerprint is SHA256:<unpadded base64> of the key bytes", T, () => {
    const key = new Uint8Array(32).fill(1);
    const expected = "SHA256:" + createHash("sha256").update(key).digest("base64").replace(/=+$/, "");
    assert.equal(fingerprint(key), expected);
    assert.equal(fingerprint(key).length, 7 + 43);
  });

  test("only canonical base64 of 32 bytes decodes", T, () => {
    const key = generateKeyPair().publicKey;
    assert.ok(decodeKey(b64(key)));
    assert.equal(decodeKey(b64(key).slice(0, -1)), null);
    assert.equal(decodeKey(b64(new Uint8Array(33))), null);
    assert.equal(decodeKey("A".repeat(42) + "B="), null, "non-zero padding bits");
    assert.equal(formatPublicKey(key), `ssync-x25519 ${b64(key)}`);
    assert.throws(() => parsePublicKey("ssh-ed25519 AAAA"), /expected "ssync-x25519/);
  });
});

describe("known_hosts", () => {
  test("unknown, add, match, changed; ipv6 and case", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "cfg", "known_hosts");
      const a = generateKeyPair().publicKey;
      const b = generateKeyPair().publicKey;
      assert.deepEqual(await lookupKnownHost(path, { host: "backup", port: 7070, publicKey: a }), { status: "unknown" });
      await addKnownHost(path, { host: "Backup", port: 7070, publicKey: a });
      await addKnownHost(path, { host: "::1", port: 7070, publicKey: b, comment: "added by test" });
      assert.equal(readFileSync(path, "utf8").split("\n")[1], `[::1]:7070 ssync-x25519 ${b64(b)} added by test`);
      assert.deepEqual(await lookupKnownHost(path, { host: "backup", port: 7070, publicKey: a }), { status: "match" });
      assert.deepEqual(await lookupKnownHost(path, { host: "backup", port: 7071, publicKey: a }), { status: "unknown" });
      const changed = await lookupKnownHost(path, { host: "BACKUP", port: 7070, publicKey: b });
      assert.equal(changed.status, "changed");
      assert.deepEqual(await lookupKnownHost(path, { host: "[::1]", port: 7070, publicKey: b }), { status: "match" });
      assert.equal(knownHostName({ host: "10.0.0.1", port: 1 }), "10.0.0.1:1");
      assert.throws(() => knownHostName({ host: "x", port: 0 }), /port 0/);
    } finally {
      t[Symbol.dispose]();
    }
  });

  test("a malformed line is an error naming file and line", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "known_hosts");
      writeFileSync(path, `# pins\n\nbackup:7070 ssync-x25519 ${b64(new Uint8Array(32))}\nbackup ssync-x25519 xyz\n`);
      await assert.rejects(
        lookupKnownHost(path, { host: "backup", port: 7070, publicKey: new Uint8Array(32) }),
        { message: `Cannot read known hosts ${path} line 4: expected "host:port ssync-x25519 <base64>"` },
      );
    } finally {
      t[Symbol.dispose]();
    }
  });
});

describe("authorized_keys", () => {
  const k1 = generateKeyPair().publicKey;
  const k2 = generateKeyPair().publicKey;
  const k3 = generateKeyPair().publicKey;

  test("options, comments, lookup", T, () => {
    const text = [
      "# who may connect",
      "",
      `ssync-x25519 ${b64(k1)} alice@laptop`,
      `read-only,path=backups/vm ssync-x25519 ${b64(k2)} backup robot`,
      `  path="images/with space",read-only ssync-x25519 ${b64(k3)}`,
    ].join("\n");
    const keys = parseAuthorizedKeys(text, { file: "authorized_keys" });
    assert.equal(keys.length, 3);
    assert.deepEqual(
      keys.map((k) => [k.readOnly, k.pathPrefix, k.comment]),
      [[false, null, "alice@laptop"], [true, "backups/vm", "backup robot"], [true, "images/with space", ""]],
    );
    assert.equal(findAuthorizedKey(keys, k2)?.pathPrefix, "backups/vm");
    assert.equal(findAuthorizedKey(keys, generateKeyPair().publicKey), undefined);
  });

  const bad: [string, RegExp][] = [
    [`rw ssync-x25519 ${b64(k1)}`, /line 2: unknown option "rw"/],
    [`read-only,read-only ssync-x25519 ${b64(k1)}`, /line 2: option "read-only" given twice/],
    [`path=../etc ssync-x25519 ${b64(k1)}`, /line 2: path prefix "\.\.\/etc" must be non-empty/],
    [`path= ssync-x25519 ${b64(k1)}`, /line 2: path prefix "" must be non-empty/],
    [`path="open ssync-x25519 ${b64(k1)}`, /line 2: unterminated quote/],
    [`ssync-x25519 ${b64(k1).slice(1)}`, /line 2: the key is not the base64 of 32 bytes/],
    [`ssh-ed25519 ${b64(k1)}`, /line 2: expected "\[options\] ssync-x25519/],
    [`read-only=yes ssync-x25519 ${b64(k1)}`, /line 2: unknown option "read-only=yes"/],
  ];
  for (const [line, expected] of bad) {
    test(`malformed: ${line.slice(0, 30)}`, T, () => {
      assert.throws(() => parseAuthorizedKeys(`# ok\n${line}\n`, { file: "/etc/ak" }), (e: Error) => {
        assert.match(e.message, /^Cannot read authorized keys \/etc\/ak /);
        assert.match(e.message, expected);
        return true;
      });
    });
  }

  test("a missing file authorizes nobody", T, async () => {
    assert.deepEqual(await readAuthorizedKeys("/nonexistent/ssync/authorized_keys"), []);
  });
});

describe("config dir", () => {
  test("XDG_CONFIG_HOME, else ~/.config", T, () => {
    assert.equal(configDir({ env: { XDG_CONFIG_HOME: "/x/cfg", HOME: "/home/u" } }), "/x/cfg/ssync");
    assert.equal(configDir({ env: { XDG_CONFIG_HOME: "relative", HOME: "/home/u" } }), "/home/u/.config/ssync");
    assert.equal(configDir({ env: { HOME: "/home/u" } }), "/home/u/.config/ssync");
    assert.equal(configDir({ env: {}, home: "/root" }), "/root/.config/ssync");
  });
});
