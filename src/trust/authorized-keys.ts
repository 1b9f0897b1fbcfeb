import { promises as fs } from "node:fs";
import { decodeKey, KEY_TYPE } from "./keys.ts";
import { refuseIfWritableByOthers } from "./trust-file.ts";

/**
 * The listener's authorized client keys. One key per line:
 *     [options] ssync-x25519 <base64> [comment]
 * options, comma-separated, no spaces except inside double quotes:
 *     read-only        the key may only read (pull)
 *     path=PREFIX      the key may only open paths under PREFIX (relative to the listener's
 *                      root); PREFIX may be double-quoted, must not contain ".." components
 * Blank lines and lines starting with # are ignored. Any malformed line is an error naming
 * the file and line: a typo must never widen access.
 */

export interface AuthorizedKey {
  publicKey: Uint8Array;
  readOnly: boolean;
  /** Paths this key may open start with this prefix; null = anything under the root. */
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
      if (value === "" || value.includes("\0") || value.split("/").includes("..")) {
        fail(`path prefix "${value}" must be non-empty and contain no ".." component`);
      }
      pathPrefix = value;
    } else {
      fail(`unknown option "${option}" (known: read-only, path=PREFIX)`);
    }
  }
  return { readOnly, pathPrefix };
}

/** Parses authorized_keys text; `file` names it in errors. */
export function parseAuthorizedKeys(text: string, options: { file: string }): AuthorizedKey[] {
  const keys: AuthorizedKey[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const fail = (why: string): never => {
      throw new Error(`Cannot read authorized keys ${options.file} line ${i + 1}: ${why}`);
    };
    const fields = splitOutsideQuotes(line, /\s/)?.filter((f) => f !== "");
    if (fields === undefined) fail("unterminated quote");
    const typeAt = fields![0] === KEY_TYPE ? 0 : fields![1] === KEY_TYPE ? 1 : -1;
    if (typeAt < 0) fail(`expected "[options] ${KEY_TYPE} <base64> [comment]"`);
    const publicKey = decodeKey(fields![typeAt + 1] ?? "");
    if (publicKey === null) fail("the key is not the base64 of 32 bytes");
    const { readOnly, pathPrefix } = typeAt === 1
      ? parseOptions(fields![0], fail)
      : { readOnly: false, pathPrefix: null };
    keys.push({ publicKey: publicKey!, readOnly, pathPrefix, comment: fields!.slice(typeAt + 2).join(" ") });
  });
  return keys;
}

/** Reads and parses an authorized_keys file; a missing file authorizes nobody. */
export async function readAuthorizedKeys(path: string): Promise<AuthorizedKey[]> {
  let text: string;
  try {
    text = await fs.readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new Error(`Cannot read authorized keys ${path}: ${(error as Error).message}`, { cause: error });
  }
  refuseIfWritableByOthers(path, "authorized keys");
  return parseAuthorizedKeys(text, { file: path });
}

/** The first entry for this public key, or undefined when the key is not authorized. */
export function findAuthorizedKey(keys: readonly AuthorizedKey[], publicKey: Uint8Array): AuthorizedKey | undefined {
  const wanted = Buffer.from(publicKey);
  return keys.find((k) => wanted.equals(k.publicKey));
}
