import { createHash } from "node:crypto";
import { constants, promises as fs } from "node:fs";
import { dirname } from "node:path";
import { type KeyPair, publicKeyOf } from "../noise/x25519.ts";
import { ErrnoError } from "../util/errors.ts";
import { checkTrustFolder, readTrustFile } from "./trust-file.ts";

/**
 * ssync identity keys on disk.
 *
 * Private key file (mode 0600, refused if group or others have any access, and checked as
 * every trust file is: trust-file.ts):
 *     ssync-private-key v1
 *     <base64 of the 32-byte X25519 private key>
 * Public key file (FILE.pub), one line, also the format of authorized_keys entries:
 *     ssync-x25519 <base64 of the 32-byte public key> [comment]
 */

export const KEY_TYPE = "ssync-x25519";
export const PRIVATE_KEY_HEADER = "ssync-private-key v1";

/** A private key file is two short lines; anything larger is not one. */
const MAX_KEY_FILE_BYTES = 4096;

const BASE64_32 = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

/** Decodes the canonical base64 of a 32-byte key; null when it is anything else. */
export function decodeKey(text: string): Uint8Array | null {
  if (!BASE64_32.test(text)) return null;
  return new Uint8Array(Buffer.from(text, "base64"));
}

export function encodeKey(key: Uint8Array): string {
  if (key.length !== 32) throw new RangeError(`Cannot encode a ${key.length}-byte key: keys are 32 bytes`);
  return Buffer.from(key).toString("base64");
}

/** OpenSSH-style fingerprint: "SHA256:" + unpadded base64 of SHA-256(public key bytes). */
export function fingerprint(publicKey: Uint8Array): string {
  return "SHA256:" + createHash("sha256").update(publicKey).digest("base64").replace(/=+$/, "");
}

/** "ssync-x25519 <base64> [comment]" (no newline). */
export function formatPublicKey(publicKey: Uint8Array, options: { comment?: string } = {}): string {
  const comment = options.comment?.replace(/[\r\n]+/g, " ").trim();
  return `${KEY_TYPE} ${encodeKey(publicKey)}${comment ? " " + comment : ""}`;
}

/** Parses "ssync-x25519 <base64> [comment]"; throws saying what is wrong. */
export function parsePublicKey(text: string): { publicKey: Uint8Array; comment: string } {
  const match = /^\s*(\S+)\s+(\S+)(?:\s+(.*?))?\s*$/.exec(text);
  if (match === null || match[1] !== KEY_TYPE) {
    throw new Error(`Cannot parse public key: expected "${KEY_TYPE} <base64> [comment]"`);
  }
  const publicKey = decodeKey(match[2]);
  if (publicKey === null) throw new Error("Cannot parse public key: the key is not the base64 of 32 bytes");
  return { publicKey, comment: match[3] ?? "" };
}

/**
 * Writes the private key to `path` (created with O_EXCL, mode 0600; an existing file is
 * never overwritten) and the public key to `path`.pub. Creates the folder (0700) if needed.
 */
export async function writePrivateKey(path: string, keyPair: KeyPair, options: { comment?: string } = {}): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await checkTrustFolder(path, { what: "key" }); // never write a key where it would be refused
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new Error(`Cannot write key ${path}: the file already exists; remove it first or choose another path`);
    }
    throw new Error(`Cannot write key ${path}: ${(error as Error).message}`, { cause: error });
  }
  try {
    // The umask can only remove bits; this makes 0600 exact even under an odd umask.
    await handle.chmod(0o600);
    await handle.writeFile(`${PRIVATE_KEY_HEADER}\n${encodeKey(keyPair.secretKey)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.writeFile(`${path}.pub`, formatPublicKey(keyPair.publicKey, options) + "\n", { mode: 0o644 });
}

/**
 * Reads a private key file and derives its public key. Refuses a file that group or others
 * can access in any way, anything but a regular file (a symbolic link included), and a file
 * that others could replace (trust-file.ts: owners and folders as OpenSSH's StrictModes).
 */
export async function readPrivateKey(path: string): Promise<KeyPair> {
  const text = await readTrustFile(path, { what: "key", privateKey: true, maxBytes: MAX_KEY_FILE_BYTES });
  if (text === null) throw new ErrnoError("ENOENT", `Cannot read key ${path}: no such file`);
  const lines = text.split("\n");
  if (lines[0].trimEnd() !== PRIVATE_KEY_HEADER) {
    throw new Error(`Cannot read key ${path}: not an ssync private key (first line must be "${PRIVATE_KEY_HEADER}")`);
  }
  const secretKey = decodeKey((lines[1] ?? "").trim());
  if (secretKey === null || lines.slice(2).some((l) => l.trim() !== "")) {
    throw new Error(`Cannot read key ${path}: line 2 must be the base64 of a 32-byte key and nothing may follow`);
  }
  return { secretKey, publicKey: publicKeyOf(secretKey) };
}

/**
 * The public key in a key file, private (checked as readPrivateKey does) or public (FILE.pub:
 * "ssync-x25519 <base64> [comment]"; a public key is no secret, so its modes are not checked).
 */
export async function readAnyKey(path: string): Promise<{ publicKey: Uint8Array; comment: string; kind: "private" | "public" }> {
  let text: string;
  try {
    const handle = await fs.open(path, constants.O_RDONLY);
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw new Error(`Cannot read key ${path}: not a regular file`);
      if (st.size > MAX_KEY_FILE_BYTES) throw new Error(`Cannot read key ${path}: ${st.size} bytes is too large for a key file`);
      text = await handle.readFile("utf8");
    } finally {
      await handle.close();
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === undefined) throw error;
    const why = code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : (error as Error).message;
    throw new ErrnoError(code, `Cannot read key ${path}: ${why}`, { cause: error });
  }
  if (text.split("\n")[0].trimEnd() === PRIVATE_KEY_HEADER) {
    return { publicKey: (await readPrivateKey(path)).publicKey, comment: "", kind: "private" };
  }
  try {
    return { ...parsePublicKey(text.trim()), kind: "public" };
  } catch (error) {
    throw new Error(`Cannot read key ${path}: neither an ssync private key nor a public key ("${KEY_TYPE} <base64> [comment]")`, {
      cause: error,
    });
  }
}
