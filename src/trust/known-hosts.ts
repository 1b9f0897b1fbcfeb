import { promises as fs } from "node:fs";
import { dirname } from "node:path";
import { decodeKey, encodeKey, KEY_TYPE } from "./keys.ts";
import { checkTrustFolder, readTrustFile, rewriteTrustFile } from "./trust-file.ts";

/**
 * The client's pinned host keys. One entry per line:
 *     host:port ssync-x25519 <base64> [comment]
 * IPv6 hosts are written [addr]:port. Blank lines and lines starting with # are ignored.
 *
 * A malformed line is skipped with a warning naming the file and line, and the other lines
 * keep working. Invariant: a skipped line never turns a "changed" host into an "unknown" one.
 * A bad line counts against every host it could be for: a host whose pins do not match is
 * "changed" (never "unknown") when a bad line names that host:port or has no readable
 * host:port at all; a bad line that names another host:port does not affect this one.
 * A pinned key that matches is a match whatever else the file holds.
 */

export type KnownHostStatus =
  | { status: "unknown" }
  | { status: "match" }
  | {
    status: "changed";
    /** The valid pins for this host; none when only unreadable lines could be for it. */
    knownKeys: Uint8Array[];
    /** Skipped lines that could be this host's pin; present only when there are some. */
    unreadableLines?: number[];
  };

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

export interface KnownHostsEntries {
  entries: { name: string; publicKey: Uint8Array; line: number }[];
  /** Skipped lines, with the host:port they name when that much could be read. */
  unreadable: { line: number; name: string | null }[];
}

const NAME = /^(\[[^\]\s]+\]|[^:\[\]\s]+):\d{1,5}$/;

/** Parses a known_hosts text; malformed lines are skipped, each with a warning naming file and line. */
export function parseKnownHosts(text: string, options: { file: string; warn?: (message: string) => void }): KnownHostsEntries {
  const result: KnownHostsEntries = { entries: [], unreadable: [] };
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const fields = line.split(/\s+/);
    const name = NAME.test(fields[0]) ? canonicalName(fields[0]) : null;
    const publicKey = fields.length >= 3 && fields[1] === KEY_TYPE ? decodeKey(fields[2]) : null;
    if (publicKey === null || name === null) {
      options.warn?.(
        `Ignoring known hosts ${options.file} line ${i + 1}: expected "host:port ${KEY_TYPE} <base64>"` +
          `; until it is fixed, ${name ?? "every host"} is refused unless it shows a key pinned on another line`,
      );
      result.unreadable.push({ line: i + 1, name });
      return;
    }
    result.entries.push({ name, publicKey, line: i + 1 });
  });
  return result;
}

/** The canonical form of a written "host:port": lower case, port without leading zeros. */
function canonicalName(written: string): string | null {
  const colon = written.lastIndexOf(":");
  const port = Number(written.slice(colon + 1));
  try {
    return knownHostName({ host: written.slice(0, colon), port });
  } catch {
    return null;
  }
}

async function readText(path: string): Promise<string> {
  return (await readTrustFile(path, { what: "known hosts" })) ?? "";
}

/**
 * Looks an endpoint's key up: match (a pin equals it), unknown (no pin and no unreadable line
 * that could be one), else changed. Warnings about skipped lines go to `options.warn`.
 */
export async function lookupKnownHost(
  path: string,
  options: KnownHost & { publicKey: Uint8Array; warn?: (message: string) => void },
): Promise<KnownHostStatus> {
  const name = knownHostName(options);
  const parsed = parseKnownHosts(await readText(path), { file: path, warn: options.warn });
  const known = parsed.entries.filter((e) => e.name === name);
  const wanted = Buffer.from(options.publicKey);
  if (known.some((e) => wanted.equals(e.publicKey))) return { status: "match" };
  const unreadableLines = parsed.unreadable.filter((u) => u.name === null || u.name === name).map((u) => u.line);
  if (known.length === 0 && unreadableLines.length === 0) return { status: "unknown" };
  const knownKeys = known.map((e) => e.publicKey);
  return { status: "changed", knownKeys, ...(unreadableLines.length > 0 ? { unreadableLines } : {}) };
}

/** Appends an entry (creating the file and its folder if needed). */
export async function addKnownHost(
  path: string,
  options: KnownHost & { publicKey: Uint8Array; comment?: string },
): Promise<void> {
  const existing = await readText(path);
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await checkTrustFolder(path, { what: "known hosts" });
  const comment = options.comment?.replace(/[\r\n]+/g, " ").trim();
  const line = `${knownHostName(options)} ${KEY_TYPE} ${encodeKey(options.publicKey)}${comment ? " " + comment : ""}\n`;
  const separator = existing.length > 0 && !existing.endsWith("\n") ? "\n" : "";
  await fs.appendFile(path, separator + line, { mode: 0o644 });
}

/** The pins of a known_hosts file, in file order, with their comments; malformed lines skipped with a warning. */
export async function listKnownHosts(
  path: string,
  options: { warn?: (message: string) => void } = {},
): Promise<{ name: string; publicKey: Uint8Array; line: number; comment: string }[]> {
  const text = await readText(path);
  const lines = text.split("\n");
  return parseKnownHosts(text, { file: path, warn: options.warn }).entries.map((e) => ({
    ...e,
    comment: lines[e.line - 1].trim().split(/\s+/).slice(3).join(" "),
  }));
}

/**
 * Forgets every pin for `endpoint` (as ssh-keygen -R): its valid lines and the unreadable
 * lines that name it, rewritten atomically (trust-file.ts). Returns the line numbers removed;
 * none (and the file untouched) when nothing names it.
 */
export async function removeKnownHost(path: string, endpoint: KnownHost): Promise<number[]> {
  const name = knownHostName(endpoint);
  const text = await readText(path);
  const parsed = parseKnownHosts(text, { file: path });
  const removed = new Set([
    ...parsed.entries.filter((e) => e.name === name).map((e) => e.line),
    ...parsed.unreadable.filter((u) => u.name === name).map((u) => u.line),
  ]);
  if (removed.size === 0) return [];
  const kept = text.split("\n").filter((_, i) => !removed.has(i + 1)).join("\n");
  await rewriteTrustFile(path, kept, { what: "known hosts" });
  return [...removed].sort((a, b) => a - b);
}
