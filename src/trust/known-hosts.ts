import { promises as fs } from "node:fs";
import { dirname } from "node:path";
import { decodeKey, encodeKey, KEY_TYPE } from "./keys.ts";
import { refuseIfWritableByOthers } from "./trust-file.ts";

/**
 * The client's pinned host keys. One entry per line:
 *     host:port ssync-x25519 <base64> [comment]
 * IPv6 hosts are written [addr]:port. Blank lines and lines starting with # are ignored;
 * any other malformed line is an error naming the file and line (a corrupt pin file must
 * not silently turn a "changed" host into an "unknown" one).
 */

export type KnownHostStatus =
  | { status: "unknown" }
  | { status: "match" }
  | { status: "changed"; knownKeys: Uint8Array[] };

export interface KnownHost {
  host: string;
  port: number;
}

/** The canonical "host:port" name of an endpoint (lower-case host, IPv6 in brackets). */
export function knownHostName(endpoint: KnownHost): string {
  const host = endpoint.host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
  if (!Number.isInteger(endpoint.port) || endpoint.port < 1 || endpoint.port > 65535) {
    throw new RangeError(`Cannot name host ${endpoint.host}: port ${endpoint.port} is not 1..65535`);
  }
  if (host === "" || /[\s#]/.test(host)) throw new Error(`Cannot name host "${endpoint.host}": invalid host name`);
  return `${host.includes(":") ? `[${host}]` : host}:${endpoint.port}`;
}

/** Parses a known_hosts text into (name, key) entries. */
export function parseKnownHosts(text: string, options: { file: string }): { name: string; publicKey: Uint8Array }[] {
  const entries: { name: string; publicKey: Uint8Array }[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const fields = line.split(/\s+/);
    const publicKey = fields.length >= 3 && fields[1] === KEY_TYPE ? decodeKey(fields[2]) : null;
    if (publicKey === null || !/^(\[[^\]]+\]|[^:\[\]]+):\d{1,5}$/.test(fields[0])) {
      throw new Error(`Cannot read known hosts ${options.file} line ${i + 1}: expected "host:port ${KEY_TYPE} <base64>"`);
    }
    entries.push({ name: fields[0].toLowerCase(), publicKey });
  });
  return entries;
}

async function readText(path: string): Promise<string> {
  try {
    const text = await fs.readFile(path, "utf8");
    refuseIfWritableByOthers(path, "known hosts");
    return text;
  } catch (error) {
    if ((error as Error).message.startsWith("Refusing")) throw error;
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw new Error(`Cannot read known hosts ${path}: ${(error as Error).message}`, { cause: error });
  }
}

/** Looks an endpoint's key up: unknown (no entry), match, or changed (entries, none equal). */
export async function lookupKnownHost(
  path: string,
  options: KnownHost & { publicKey: Uint8Array },
): Promise<KnownHostStatus> {
  const name = knownHostName(options);
  const known = parseKnownHosts(await readText(path), { file: path }).filter((e) => e.name === name);
  if (known.length === 0) return { status: "unknown" };
  const wanted = Buffer.from(options.publicKey);
  if (known.some((e) => wanted.equals(e.publicKey))) return { status: "match" };
  return { status: "changed", knownKeys: known.map((e) => e.publicKey) };
}

/** Appends an entry (creating the file and its folder if needed). */
export async function addKnownHost(
  path: string,
  options: KnownHost & { publicKey: Uint8Array; comment?: string },
): Promise<void> {
  const existing = await readText(path);
  parseKnownHosts(existing, { file: path });
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const comment = options.comment?.replace(/[\r\n]+/g, " ").trim();
  const line = `${knownHostName(options)} ${KEY_TYPE} ${encodeKey(options.publicKey)}${comment ? " " + comment : ""}\n`;
  const separator = existing.length > 0 && !existing.endsWith("\n") ? "\n" : "";
  await fs.appendFile(path, separator + line, { mode: 0o644 });
}
