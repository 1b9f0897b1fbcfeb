/**
 * Trust files (authorized_keys, known_hosts, private keys) are believed only when nobody but
 * root and us could have written them or any folder on their way (src/trust/trust-file.ts,
 * in the spirit of OpenSSH's StrictModes). Real trees under a temporary folder; the owner
 * changes (chown to nobody) need root and are skipped with a message otherwise.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { readAuthorizedKeys } from "../src/trust/authorized-keys.ts";
import { formatPublicKey, readPrivateKey, writePrivateKey } from "../src/trust/keys.ts";
import { addKnownHost, lookupKnownHost } from "../src/trust/known-hosts.ts";
import { generateKeyPair } from "../src/noise/x25519.ts";
import { withTempDir } from "./helpers/sparse.ts";

const T = { timeout: 10_000 };
const NOBODY = 65534;
const asRoot = typeof process.getuid === "function" && process.getuid() === 0;
const ROOT_ONLY = { ...T, skip: asRoot ? false : "needs root to give files to user nobody (chown)" };
const key = generateKeyPair();
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

/** A folder with exactly `mode` (the umask cannot narrow it). */
function folder(p: string, mode = 0o700): string {
  fs.mkdirSync(p, { recursive: true });
  fs.chmodSync(p, mode);
  return p;
}

/** A well-formed authorized_keys file, mode 0600. */
function keysFile(p: string, mode = 0o600): string {
  fs.writeFileSync(p, formatPublicKey(key.publicKey, { comment: "k" }) + "\n");
  fs.chmodSync(p, mode);
  return p;
}

async function accepted(p: string): Promise<void> {
  assert.equal((await readAuthorizedKeys(p)).length, 1);
}

async function refused(p: string, why: RegExp): Promise<void> {
  await assert.rejects(readAuthorizedKeys(p), (e: Error) => {
    assert.match(e.message, new RegExp(`^Refusing authorized keys ${esc(p)}: `));
    assert.match(e.message, why);
    return true;
  });
}

describe("the file itself", () => {
  test("a symbolic link is refused, even to a good file in a good folder", T, async () => {
    await withTempDir(async (dir) => {
      const real = keysFile(path.join(dir, "real_keys"));
      await accepted(real);
      const link = path.join(dir, "authorized_keys");
      fs.symlinkSync(real, link);
      await refused(link, new RegExp(`it is a symbolic link \\(to ${esc(real)}\\); replace the link with the file itself$`));
    });
  });

  test("anything but a regular file is refused", T, async () => {
    await withTempDir(async (dir) => {
      await refused(folder(path.join(dir, "authorized_keys")), /it is not a regular file$/);
    });
  });

  test("a file owned by another user is refused, whatever its mode", ROOT_ONLY, async () => {
    await withTempDir(async (dir) => {
      const p = keysFile(path.join(dir, "authorized_keys"), 0o644);
      fs.chownSync(p, NOBODY, NOBODY);
      await refused(p, new RegExp(`it is owned by uid ${NOBODY}, not by root or by us \\(uid 0\\); run chown 0 ${esc(p)}$`));
      fs.chownSync(p, 0, 0);
      await accepted(p);
    });
  });
});

describe("the folders on its way", () => {
  test("a folder writable by group or others is refused, wherever it is on the path", T, async () => {
    await withTempDir(async (dir) => {
      const open = folder(path.join(dir, "open"), 0o777);
      const p = keysFile(path.join(folder(path.join(open, "private")), "authorized_keys"));
      await refused(p, new RegExp(`its folder ${esc(open)} is writable by group or others \\(mode 0777\\); run chmod go-w ${esc(open)}$`));
      fs.chmodSync(open, 0o770);
      await refused(p, /\(mode 0770\)/);
      fs.chmodSync(open, 0o755);
      await accepted(p);
    });
  });

  test("a file owned by another user in a 0777 folder is refused", ROOT_ONLY, async () => {
    await withTempDir(async (dir) => {
      const open = folder(path.join(dir, "open"), 0o777);
      const p = keysFile(path.join(open, "authorized_keys"));
      fs.chownSync(p, NOBODY, NOBODY);
      await refused(p, new RegExp(`its folder ${esc(open)} is writable by group or others`));
      fs.chmodSync(open, 0o755);
      await refused(p, new RegExp(`it is owned by uid ${NOBODY}`));
    });
  });

  test("a folder owned by another user is refused even when only its owner can write it", ROOT_ONLY, async () => {
    await withTempDir(async (dir) => {
      const theirs = folder(path.join(dir, "theirs"), 0o755);
      const p = keysFile(path.join(theirs, "authorized_keys"));
      fs.chownSync(theirs, NOBODY, NOBODY);
      await refused(p, new RegExp(`its folder ${esc(theirs)} is owned by uid ${NOBODY}, not by root or by us \\(uid 0\\); run chown 0 ${esc(theirs)}`));
    });
  });

  test("a root-owned sticky folder (like /tmp) may be writable by others; one owned by another user may not", ROOT_ONLY, async () => {
    await withTempDir(async (dir) => {
      const sticky = folder(path.join(dir, "tmp"), 0o1777);
      const p = keysFile(path.join(sticky, "authorized_keys"));
      await accepted(p);
      fs.chownSync(sticky, NOBODY, NOBODY);
      await refused(p, new RegExp(`its folder ${esc(sticky)} is owned by uid ${NOBODY}`));
      fs.chownSync(sticky, 0, 0);
      fs.chmodSync(sticky, 0o777); // the same folder without the sticky bit
      await refused(p, new RegExp(`its folder ${esc(sticky)} is writable by group or others \\(mode 0777\\)`));
    });
  });

  test("a missing file in an unsafe folder is refused too (it could be created there)", T, async () => {
    await withTempDir(async (dir) => {
      const open = folder(path.join(dir, "open"), 0o777);
      await refused(path.join(open, "authorized_keys"), /is writable by group or others/);
      assert.deepEqual(await readAuthorizedKeys(path.join(dir, "safe", "authorized_keys")), []);
    });
  });
});

describe("symbolic links among the folders", () => {
  test("a link we own to a safe folder is followed", T, async () => {
    await withTempDir(async (dir) => {
      const real = folder(path.join(dir, "real"));
      keysFile(path.join(real, "authorized_keys"));
      fs.symlinkSync("real", path.join(dir, "relative-link"));
      fs.symlinkSync(real, path.join(dir, "absolute-link"));
      await accepted(path.join(dir, "relative-link", "authorized_keys"));
      await accepted(path.join(dir, "absolute-link", "authorized_keys"));
    });
  });

  test("a link whose target passes through an unsafe folder is refused", T, async () => {
    await withTempDir(async (dir) => {
      const open = folder(path.join(dir, "open"), 0o777);
      const real = folder(path.join(open, "real"));
      keysFile(path.join(real, "authorized_keys"));
      fs.symlinkSync(real, path.join(dir, "link"));
      await refused(path.join(dir, "link", "authorized_keys"), new RegExp(`its folder ${esc(open)} is writable`));
    });
  });

  test("a link inside an unsafe folder is refused (others could repoint it)", T, async () => {
    await withTempDir(async (dir) => {
      const real = folder(path.join(dir, "real"));
      keysFile(path.join(real, "authorized_keys"));
      const open = folder(path.join(dir, "open"), 0o777);
      fs.symlinkSync(real, path.join(open, "link"));
      await refused(path.join(open, "link", "authorized_keys"), new RegExp(`its folder ${esc(open)} is writable`));
    });
  });

  test("a link owned by another user is refused", ROOT_ONLY, async () => {
    await withTempDir(async (dir) => {
      const real = folder(path.join(dir, "real"));
      keysFile(path.join(real, "authorized_keys"));
      const link = path.join(dir, "link");
      fs.symlinkSync(real, link);
      fs.lchownSync(link, NOBODY, NOBODY);
      await refused(
        path.join(link, "authorized_keys"),
        new RegExp(`its folder ${esc(link)} is a symbolic link owned by uid ${NOBODY}, not by root or by us \\(uid 0\\); run chown -h 0 ${esc(link)}`),
      );
    });
  });

  test('".." after a link goes up from the link\'s target, as the kernel resolves it', T, async () => {
    await withTempDir(async (dir) => {
      keysFile(path.join(dir, "authorized_keys")); // what a lexical "link/.." would name
      const open = folder(path.join(dir, "open"), 0o777);
      keysFile(path.join(open, "authorized_keys")); // what the kernel opens
      fs.symlinkSync(folder(path.join(open, "sub")), path.join(dir, "link"));
      await refused(`${dir}/link/../authorized_keys`, new RegExp(`its folder ${esc(open)} is writable`));
    });
  });

  test("a loop of links ends", T, async () => {
    await withTempDir(async (dir) => {
      fs.symlinkSync("b", path.join(dir, "a"));
      fs.symlinkSync("a", path.join(dir, "b"));
      await assert.rejects(readAuthorizedKeys(path.join(dir, "a", "authorized_keys")), /more than 40 symbolic links/);
    });
  });
});

describe("known_hosts and private keys are checked the same way", () => {
  test("known_hosts: a link, an unsafe folder, another owner are refused; no pin is written there", T, async () => {
    await withTempDir(async (dir) => {
      const lookup = (p: string) => lookupKnownHost(p, { host: "h", port: 1, publicKey: key.publicKey });
      const real = path.join(dir, "real_known_hosts");
      await addKnownHost(real, { host: "h", port: 1, publicKey: key.publicKey });
      assert.deepEqual(await lookup(real), { status: "match" });
      const link = path.join(dir, "known_hosts");
      fs.symlinkSync(real, link);
      await assert.rejects(lookup(link), { message: new RegExp(`^Refusing known hosts ${esc(link)}: it is a symbolic link`) });
      await assert.rejects(addKnownHost(link, { host: "x", port: 1, publicKey: key.publicKey }), /it is a symbolic link/);
      const open = folder(path.join(dir, "open"), 0o777);
      const inOpen = path.join(open, "known_hosts");
      await assert.rejects(lookup(inOpen), { message: new RegExp(`^Refusing known hosts ${esc(inOpen)}: its folder ${esc(open)} is writable`) });
      await assert.rejects(addKnownHost(inOpen, { host: "x", port: 1, publicKey: key.publicKey }), /is writable by group or others/);
      assert.equal(fs.existsSync(inOpen), false);
      if (asRoot) {
        fs.chownSync(real, NOBODY, NOBODY);
        await assert.rejects(lookup(real), new RegExp(`it is owned by uid ${NOBODY}`));
      }
    });
  });

  test("private keys: a link or an unsafe folder is refused; no key is written there", T, async () => {
    await withTempDir(async (dir) => {
      const real = path.join(dir, "real_key");
      await writePrivateKey(real, key);
      await readPrivateKey(real);
      const link = path.join(dir, "key");
      fs.symlinkSync(real, link);
      await assert.rejects(readPrivateKey(link), { message: new RegExp(`^Refusing key ${esc(link)}: it is a symbolic link`) });
      const open = folder(path.join(dir, "open"), 0o777);
      const inOpen = path.join(open, "key");
      fs.copyFileSync(real, inOpen);
      fs.chmodSync(inOpen, 0o600);
      await assert.rejects(readPrivateKey(inOpen), { message: new RegExp(`^Refusing key ${esc(inOpen)}: its folder ${esc(open)} is writable`) });
      const fresh = path.join(open, "new_key");
      await assert.rejects(writePrivateKey(fresh, generateKeyPair()), { message: new RegExp(`^Refusing key ${esc(fresh)}: its folder ${esc(open)} is writable`) });
      assert.equal(fs.existsSync(fresh), false);
      if (asRoot) {
        fs.chownSync(real, NOBODY, NOBODY);
        await assert.rejects(readPrivateKey(real), { message: new RegExp(`^Refusing key ${esc(real)}: it is owned by uid ${NOBODY}`) });
      }
    });
  });
});
