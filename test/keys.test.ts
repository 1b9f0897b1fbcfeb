import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeKey, fingerprint, formatPublicKey, parsePublicKey, readPrivateKey, writePrivateKey } from "../src/trust/keys.ts";
import { addKnownHost, knownHostName, lookupKnownHost } from "../src/trust/known-hosts.ts";
import { findAuthorizedKey, parseAuthorizedKeys, parseAuthorizedKeysFile, readAuthorizedKeys } from "../src/trust/authorized-keys.ts";
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

  test("a malformed line is skipped with a warning naming file and line; the other pins keep working", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "known_hosts");
      const a = generateKeyPair().publicKey;
      const b = generateKeyPair().publicKey;
      writeFileSync(path, `# pins\n\nbackup:7070 ssync-x25519 ${b64(a)}\nother:7070 ssync-x25519 xyz\nthird:1 ssync-x25519 ${b64(b)}\n`);
      const warnings: string[] = [];
      const warn = (m: string) => warnings.push(m);
      assert.deepEqual(await lookupKnownHost(path, { host: "backup", port: 7070, publicKey: a, warn }), { status: "match" });
      assert.deepEqual(warnings, [
        `Ignoring known hosts ${path} line 4: expected "host:port ssync-x25519 <base64>"; ` +
        `until it is fixed, other:7070 is refused unless it shows a key pinned on another line`,
      ]);
      assert.deepEqual(await lookupKnownHost(path, { host: "third", port: 1, publicKey: b }), { status: "match" });
      assert.equal((await lookupKnownHost(path, { host: "backup", port: 7070, publicKey: b })).status, "changed");
      // A bad line for another host:port leaves this one unknown (it may be pinned).
      assert.deepEqual(await lookupKnownHost(path, { host: "new", port: 7070, publicKey: b }), { status: "unknown" });
      await addKnownHost(path, { host: "new", port: 7070, publicKey: b });
      assert.deepEqual(await lookupKnownHost(path, { host: "new", port: 7070, publicKey: b }), { status: "match" });
    } finally {
      t[Symbol.dispose]();
    }
  });

  test("a skipped line never turns a changed host into an unknown one", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "known_hosts");
      const pinned = generateKeyPair().publicKey;
      const other = generateKeyPair().publicKey;
      const lookup = (host: string, publicKey: Uint8Array) => lookupKnownHost(path, { host, port: 7070, publicKey });
      // The only pin of "backup" is damaged: its key, unreadable, may be anything.
      writeFileSync(path, `backup:7070 ssync-x25519 ${b64(pinned).slice(0, 20)}\n`);
      assert.deepEqual(await lookup("backup", other), { status: "changed", knownKeys: [], unreadableLines: [1] });
      assert.deepEqual(await lookup("elsewhere", other), { status: "unknown" });
      // The name is damaged too: the line could be any host's pin, so no host is "unknown".
      writeFileSync(path, `# x\nback up:7070 ssync-x25519 ${b64(pinned)}\nseen:7070 ssync-x25519 ${b64(pinned)}\n`);
      assert.deepEqual(await lookup("backup", other), { status: "changed", knownKeys: [], unreadableLines: [2] });
      assert.deepEqual(await lookup("elsewhere", other), { status: "changed", knownKeys: [], unreadableLines: [2] });
      // A key pinned on a good line still matches, and a wrong key there is changed as before.
      assert.deepEqual(await lookup("seen", pinned), { status: "match" });
      const changed = await lookup("seen", other);
      assert.equal(changed.status, "changed");
      assert.deepEqual(changed.status === "changed" && changed.knownKeys.map(b64), [b64(pinned)]);
      // Same name written with a bad key and a good pin for it elsewhere: the good pin decides.
      writeFileSync(path, `BACKUP:7070 ssync-x25519 ${b64(pinned)}\nbackup:7070 ssync-x25519 nope\n`);
      assert.deepEqual(await lookup("backup", pinned), { status: "match" });
      assert.equal((await lookup("backup", other)).status, "changed");
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

  // Each bad line is line 2 of "# ok\n<line>\n<k3 on line 3>\n": it is skipped, line 3 still works.
  const bad: [string, RegExp][] = [
    [`rw ssync-x25519 ${b64(k1)}`, /line 2: unknown option "rw"/],
    [`read-only,read-only ssync-x25519 ${b64(k1)}`, /line 2: option "read-only" given twice/],
    [`path=../etc ssync-x25519 ${b64(k1)}`, /line 2: path prefix "\.\.\/etc" must not contain a "\.\." component/],
    [`path=a/../../b ssync-x25519 ${b64(k1)}`, /line 2: path prefix "a\/\.\.\/\.\.\/b" must not contain a "\.\." component/],
    [`path= ssync-x25519 ${b64(k1)}`, /line 2: path prefix "" means the whole root; remove the path= option/],
    [`path="open ssync-x25519 ${b64(k1)}`, /line 2: unterminated quote/],
    [`ssync-x25519 ${b64(k1).slice(1)}`, /line 2: the key is not the base64 of 32 bytes/],
    [`ssh-ed25519 ${b64(k1)}`, /line 2: expected "\[options\] ssync-x25519/],
    [`read-only=yes ssync-x25519 ${b64(k1)}`, /line 2: unknown option "read-only=yes"/],
  ];
  for (const [line, expected] of bad) {
    test(`malformed, skipped with a warning: ${line.slice(0, 30)}`, T, () => {
      const warnings: string[] = [];
      const keys = parseAuthorizedKeys(`# ok\n${line}\nssync-x25519 ${b64(k3)} carol\n`, { file: "/etc/ak", warn: (m) => warnings.push(m) });
      assert.deepEqual(keys.map((k) => k.comment), ["carol"]);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /^Ignoring authorized keys \/etc\/ak line 2: /);
      assert.match(warnings[0], expected);
      // Without a listener for warnings the line is skipped all the same.
      assert.deepEqual(parseAuthorizedKeys(`# ok\n${line}\n`, { file: "/etc/ak" }), []);
    });
  }

  for (const prefix of ["/", ".", "./", "//", "./.", "/./", '"/"', '"."', '""']) {
    test(`path=${prefix} means the whole root and is refused`, T, () => {
      const warnings: string[] = [];
      const keys = parseAuthorizedKeys(`read-only,path=${prefix} ssync-x25519 ${b64(k1)}\n`, { file: "ak", warn: (m) => warnings.push(m) });
      assert.deepEqual(keys, []);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0], /^Ignoring authorized keys ak line 1: path prefix ".*" means the whole root; remove the path= option to allow the whole root$/);
    });
  }

  test("a path prefix is kept normalised: no empty or \".\" components", T, () => {
    const keys = parseAuthorizedKeys(`path=/backups//./vm/ ssync-x25519 ${b64(k1)}\npath="./a b/." ssync-x25519 ${b64(k2)}\n`, { file: "ak" });
    assert.deepEqual(keys.map((k) => k.pathPrefix), ["backups/vm", "a b"]);
  });

  test("a key listed twice is authorized by neither line; the warning names both", T, () => {
    const warnings: string[] = [];
    const warn = (m: string) => warnings.push(m);
    const text = [
      `ssync-x25519 ${b64(k1)} unrestricted first`,
      `ssync-x25519 ${b64(k2)} bob`,
      `read-only,path=a ssync-x25519 ${b64(k1)} restricted later`,
    ].join("\n");
    const keys = parseAuthorizedKeys(text, { file: "/etc/ak", warn });
    assert.equal(findAuthorizedKey(keys, k1), undefined);
    assert.equal(findAuthorizedKey(keys, k2)?.comment, "bob");
    assert.deepEqual(warnings, [
      `Ignoring authorized keys /etc/ak lines 1 and 3: the key ${fingerprint(k1)} is listed more than once; ` +
      `it is not authorized until all but one of these lines are removed`,
    ]);
    warnings.length = 0;
    const thrice = parseAuthorizedKeys(`ssync-x25519 ${b64(k1)}\n\nssync-x25519 ${b64(k1)}\n# c\nread-only ssync-x25519 ${b64(k1)}\n`, { file: "f", warn });
    assert.deepEqual(thrice, []);
    assert.match(warnings[0], /^Ignoring authorized keys f lines 1, 3 and 5: /);
  });

  test("a malformed line for a key also listed on a good line leaves the key unauthorized", T, () => {
    const warnings: string[] = [];
    // The typo was meant to restrict the key; using the good line alone would widen access.
    const text = `ssync-x25519 ${b64(k1)} old\nread-onyl,path=a ssync-x25519 ${b64(k1)} meant to restrict\nssync-x25519 ${b64(k2)}\n`;
    const keys = parseAuthorizedKeys(text, { file: "ak", warn: (m) => warnings.push(m) });
    assert.equal(findAuthorizedKey(keys, k1), undefined);
    assert.ok(findAuthorizedKey(keys, k2));
    assert.equal(warnings.length, 2);
    assert.match(warnings[0], /^Ignoring authorized keys ak line 2: unknown option "read-onyl"/);
    assert.match(warnings[1], /^Ignoring authorized keys ak lines 1 and 2: the key SHA256:\S+ is listed more than once/);
  });

  test("keys on skipped lines are named as unusable (listed, yet not authorized)", T, () => {
    const text = `ssync-x25519 ${b64(k1)}\nread-only ssync-x25519 ${b64(k1)}\nread-onyl ssync-x25519 ${b64(k2)}\nssync-x25519 ${b64(k3)}\n`;
    const { keys, unusable } = parseAuthorizedKeysFile(text, { file: "ak" });
    assert.deepEqual(keys.map((k) => b64(k.publicKey)), [b64(k3)]);
    assert.deepEqual(unusable.map(b64).sort(), [b64(k1), b64(k2)].sort());
  });

  test("readAuthorizedKeys skips bad lines of a real file and reports them to warn", T, async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, "authorized_keys");
      writeFileSync(path, `ssync-x25519 ${b64(k1)} a\nbroken line\nread-only ssync-x25519 ${b64(k2)} b\n`, { mode: 0o600 });
      chmodSync(path, 0o600);
      const warnings: string[] = [];
      const keys = await readAuthorizedKeys(path, { warn: (m) => warnings.push(m) });
      assert.deepEqual(keys.map((k) => [k.comment, k.readOnly]), [["a", false], ["b", true]]);
      assert.deepEqual(warnings, [`Ignoring authorized keys ${path} line 2: expected "[options] ssync-x25519 <base64> [comment]"`]);
      assert.equal((await readAuthorizedKeys(path)).length, 2);
    } finally {
      t[Symbol.dispose]();
    }
  });

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
