import { decodeKey, fingerprint, KEY_TYPE } from "./keys.ts";
import { readTrustFile } from "./trust-file.ts";

/**
 * The listener's authorized client keys. One key per line:
 *     [options] ssync-x25519 <base64> [comment]
 * options, comma-separated, no spaces except inside double quotes:
 *     read-only        the key may only read (pull)
 *     path=PREFIX      the key may only open paths under PREFIX (relative to the listener's
 *                      root); PREFIX may be double-quoted. Empty and "." components and
 *                      leading, trailing or repeated slashes are dropped; what remains must
 *                      be non-empty (a prefix meaning the whole root is refused: remove the
 *                      option instead) and hold no ".." component.
 * Blank lines and lines starting with # are ignored.
 *
 * Invariant: a mistake never widens access. A malformed line is skipped with a warning naming
 * the file, the line and why; the other lines keep working. A key listed on more than one
 * line — a malformed line counts when a key can be read from it — is authorized by none of
 * them (a warning names every line) until all but one are removed: which line's options win
 * is never guessed. A file that is unsafe as a whole (trust-file.ts: a link, owned or writable
 * by others, or in a folder others can change) is an error and authorizes nobody.
 */

export interface AuthorizedKey {
  publicKey: Uint8Array;
  readOnly: boolean;
  /** Paths this key may open start with this prefix (normalised: "a/b"); null = anything under the root. */
  pathPrefix: string | null;
  comment: string;
}

/** Splits on `separator` outside double quotes. */
function splitOutsideQuotes(text: string, separator: RegExp): string[] | null {
  const parts: string[] = [];
  let current = "";
  let quoted = false;
  for (const ch of text) {
    if (ch === '"') quoted = !quoted;
    if (!quoted && separator.test(ch)) {
      parts.push(current);
      current = "";
    } else {
      current += ch;
    }
  }
  if (quoted) return null;
  parts.push(current);
  return parts;
}

function parseOptions(text: string, fail: (why: string) => never): Pick<AuthorizedKey, "readOnly" | "pathPrefix"> {
  const options = splitOutsideQuotes(text, /,/);
  if (options === null) fail("unterminated quote in options");
  let readOnly = false;
  let pathPrefix: string | null = null;
  const seen = new Set<string>();
  for (const option of options) {
    const [name, ...rest] = option.split("=");
    if (seen.has(name)) fail(`option "${name}" given twice`);
    seen.add(name);
    if (name === "read-only" && rest.length === 0) {
      readOnly = true;
    } else if (name === "path" && rest.length > 0) {
      let value = rest.join("=");
      if (value.startsWith('"')) {
        if (value.length < 2 || !value.endsWith('"') || value.slice(1, -1).includes('"')) fail("badly quoted path");
        value = value.slice(1, -1);
      } else if (value.includes('"')) {
        fail("badly quoted path");
      }
      const parts = value.split("/").filter((p) => p !== "" && p !== ".");
      if (value.includes("\0")) fail("path prefix contains NUL");
      if (parts.includes("..")) fail(`path prefix "${value}" must not contain a ".." component`);
      if (parts.length === 0) {
        fail(`path prefix "${value}" means the whole root; remove the path= option to allow the whole root`);
      }
      pathPrefix = parts.join("/");
    } else {
      fail(`unknown option "${option}" (known: read-only, path=PREFIX)`);
    }
  }
  return { readOnly, pathPrefix };
}

/** Where warnings about skipped lines go; without one they are dropped (the lines are still skipped). */
export interface TrustWarnings {
  warn?: (message: string) => void;
}

class BadLine extends Error {}

/** Keys written on a line that did not parse, so a duplicate cannot hide behind a typo. */
function keysOnBadLine(line: string): Uint8Array[] {
  const candidates = line.match(/(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{43}=(?![A-Za-z0-9+/=])/g) ?? [];
  return candidates.flatMap((c) => decodeKey(c) ?? []);
}

function parseLine(line: string): AuthorizedKey {
  const fail = (why: string): never => {
    throw new BadLine(why);
  };
  const fields = splitOutsideQuotes(line, /\s/)?.filter((f) => f !== "");
  if (fields === undefined) fail("unterminated quote");
  const typeAt = fields![0] === KEY_TYPE ? 0 : fields![1] === KEY_TYPE ? 1 : -1;
  if (typeAt < 0) fail(`expected "[options] ${KEY_TYPE} <base64> [comment]"`);
  const publicKey = decodeKey(fields![typeAt + 1] ?? "");
  if (publicKey === null) fail("the key is not the base64 of 32 bytes");
  const { readOnly, pathPrefix } = typeAt === 1 ? parseOptions(fields![0], fail) : { readOnly: false, pathPrefix: null };
  return { publicKey: publicKey!, readOnly, pathPrefix, comment: fields!.slice(typeAt + 2).join(" ") };
}

/** What an authorized_keys file says. */
export interface AuthorizedKeysFile {
  /** The usable entries, at most one per key. */
  keys: AuthorizedKey[];
  /**
   * Keys named on lines that were skipped (listed twice, or readable on a malformed line):
   * not authorized, yet listed, so pairing must not treat them as new keys without options.
   */
  unusable: Uint8Array[];
}

/**
 * Parses authorized_keys text; `file` names it in warnings. Skips malformed lines and every
 * line of a key listed more than once (see the invariant above), warning about each.
 */
export function parseAuthorizedKeys(text: string, options: { file: string } & TrustWarnings): AuthorizedKey[] {
  return parseAuthorizedKeysFile(text, options).keys;
}

/** parseAuthorizedKeys, also naming the keys whose lines were skipped. */
export function parseAuthorizedKeysFile(text: string, options: { file: string } & TrustWarnings): AuthorizedKeysFile {
  const warn = options.warn ?? (() => {});
  const parsed: { line: number; key: AuthorizedKey | null }[] = [];
  const linesOf = new Map<string, { publicKey: Uint8Array; lines: number[] }>();
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    let key: AuthorizedKey | null = null;
    let publicKeys: Uint8Array[];
    try {
      key = parseLine(line);
      publicKeys = [key.publicKey];
    } catch (error) {
      if (!(error instanceof BadLine)) throw error;
      warn(`Ignoring authorized keys ${options.file} line ${i + 1}: ${error.message}`);
      publicKeys = keysOnBadLine(line);
    }
    parsed.push({ line: i + 1, key });
    for (const publicKey of publicKeys) {
      const id = Buffer.from(publicKey).toString("hex");
      const seen = linesOf.get(id) ?? { publicKey, lines: [] };
      if (seen.lines.at(-1) !== i + 1) seen.lines.push(i + 1);
      linesOf.set(id, seen);
    }
  });
  for (const { publicKey, lines } of linesOf.values()) {
    if (lines.length < 2) continue;
    const list = lines.length === 2 ? `${lines[0]} and ${lines[1]}` : `${lines.slice(0, -1).join(", ")} and ${lines.at(-1)}`;
    warn(
      `Ignoring authorized keys ${options.file} lines ${list}: the key ${fingerprint(publicKey)} is listed more than once; ` +
        `it is not authorized until all but one of these lines are removed`,
    );
    for (const p of parsed) if (lines.includes(p.line)) p.key = null;
  }
  const keys = parsed.flatMap((p) => (p.key ? [p.key] : []));
  const usable = new Set(keys.map((k) => Buffer.from(k.publicKey).toString("hex")));
  const unusable = [...linesOf].flatMap(([id, seen]) => (usable.has(id) ? [] : [seen.publicKey]));
  return { keys, unusable };
}

/**
 * Reads and parses an authorized_keys file; a missing file authorizes nobody. Bad lines are
 * skipped (warnings to `options.warn`); a file that is unsafe as a whole (trust-file.ts:
 * a link, writable or owned by others, or in such a folder) is an error.
 */
export async function readAuthorizedKeys(path: string, options: TrustWarnings = {}): Promise<AuthorizedKey[]> {
  return (await readAuthorizedKeysFile(path, options)).keys;
}

/** readAuthorizedKeys, also naming the keys whose lines were skipped. */
export async function readAuthorizedKeysFile(path: string, options: TrustWarnings = {}): Promise<AuthorizedKeysFile> {
  const text = await readTrustFile(path, { what: "authorized keys" });
  if (text === null) return { keys: [], unusable: [] };
  return parseAuthorizedKeysFile(text, { file: path, warn: options.warn });
}

/** The entry for this public key (parseAuthorizedKeys leaves at most one), or undefined. */
export function findAuthorizedKey(keys: readonly AuthorizedKey[], publicKey: Uint8Array): AuthorizedKey | undefined {
  const wanted = Buffer.from(publicKey);
  return keys.find((k) => wanted.equals(k.publicKey));
}
