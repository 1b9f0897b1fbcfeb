/** Parsing of the engine options shared by sync, push and pull. */
import {
  DEFAULT_BLOCK_SIZE,
  type HashAlgorithm,
  HashCode,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
} from "../../protocol/constants.ts";
import { COMPRESS_MODES, type CompressMode } from "../engine/compress-policy.ts";
import { DEFAULT_IDLE_TIMEOUT_MS } from "../listener/listener-limits.ts";
import process from "node:process";
import type { MetadataWanted } from "../session/file-attributes.ts";
import { UsageError } from "../util/errors.ts";
import { type ProgressChoice, parseProgress } from "./progress-mode.ts";

export interface EngineFlags {
  blockSize?: string | number;
  hash?: string;
  dryRun?: boolean;
  verify?: boolean;
  json?: boolean;
  inplace?: boolean;
  wait?: string | number;
  /** cac's `--no-refine` sets it false. */
  refine?: boolean;
  compress?: string;
  quiet?: boolean;
  verbose?: boolean;
  /** true (`--progress`), the text after `--progress=`, false (`--no-progress`). */
  progress?: string | boolean;
  /** cac's `--no-times` / `--no-perms` set them false. */
  times?: boolean;
  perms?: boolean;
  owner?: boolean;
  allowShrink?: boolean;
}

export interface EngineOptions {
  blockSize: number;
  hash: HashAlgorithm;
  dryRun: boolean;
  verify: boolean;
  json: boolean;
  inplace: boolean;
  /** --wait: how long a writer waits for a destination another ssync holds (ms). */
  waitMs: number;
  /** Refine differing blocks to 4 KiB pages (default); --no-refine sends whole blocks. */
  refine: boolean;
  /** --compress: zstd for DATA: auto (while the link is the bottleneck), never, always. */
  compress: CompressMode;
  /** -q/--quiet: nothing on stdout or stderr but errors (and what --json or --progress ask for). */
  quiet: boolean;
  /** -v/--verbose: also say, on stderr, what is being done (where, with which key and settings). */
  verbose: boolean;
  progress: ProgressChoice;
  /** What the destination takes from the source: mode (--no-perms), mtime (--no-times), owner (--owner). */
  metadata: MetadataWanted;
  /** --allow-shrink: a destination larger than the source may lose the data past its end. */
  allowShrink: boolean;
}

const UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2 };

export function parseBlockSize(text: string | number | undefined): number {
  if (text === undefined) return DEFAULT_BLOCK_SIZE;
  const m = /^(\d+)\s*([kKmM]?)(i?[bB])?$/.exec(String(text).trim());
  const n = m ? Number(m[1]) * UNITS[m[2].toLowerCase()] : NaN;
  if (!Number.isInteger(n) || n < MIN_BLOCK_SIZE || n > MAX_BLOCK_SIZE || (n & (n - 1)) !== 0) {
    throw new UsageError(`Invalid --block-size ${text}: use a power of two from 4K to 1M, such as 64K`);
  }
  return n;
}

export function parseHash(text: string | undefined): HashAlgorithm {
  const h = text ?? "poly1305";
  if (!(h in HashCode)) {
    throw new UsageError(`Invalid --hash ${h}: use poly1305 (default), hmac-sha256, blake3, or xxh128 (trusted data only)`);
  }
  return h as HashAlgorithm;
}

export function parseCompress(text: string | undefined): CompressMode {
  const c = text ?? "auto";
  if (!(COMPRESS_MODES as readonly string[]).includes(c)) {
    throw new UsageError(`Invalid --compress ${c}: use auto (default: while the link is the bottleneck), never, or always`);
  }
  return c as CompressMode;
}

/** --wait's default: long enough for a session that is ending (a killed client's) to let go. */
export const DEFAULT_WAIT_S = 5;
/** The longest --wait: a day. */
const MAX_WAIT_S = 86_400;

export function parseWait(text: string | number | undefined): number {
  if (text === undefined) return DEFAULT_WAIT_S * 1000;
  const n = /^\d+$/.test(String(text).trim()) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > MAX_WAIT_S) {
    throw new UsageError(`Invalid --wait ${text}: give whole seconds from 0 (do not wait) to ${MAX_WAIT_S}`);
  }
  return n * 1000;
}

/** The longest --idle-timeout: a day. */
const MAX_IDLE_TIMEOUT_S = 86_400;

export function parseIdleTimeout(text: string | number | undefined): number {
  if (text === undefined) return DEFAULT_IDLE_TIMEOUT_MS;
  const n = /^\d+$/.test(String(text).trim()) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_IDLE_TIMEOUT_S) {
    throw new UsageError(`Invalid --idle-timeout ${text}: give whole seconds from 1 to ${MAX_IDLE_TIMEOUT_S}`);
  }
  return n * 1000;
}

export function engineOptions(flags: EngineFlags): EngineOptions {
  return {
    blockSize: parseBlockSize(flags.blockSize),
    hash: parseHash(flags.hash),
    dryRun: flags.dryRun === true,
    verify: flags.verify === true,
    json: flags.json === true,
    inplace: flags.inplace === true,
    waitMs: parseWait(flags.wait),
    refine: flags.refine !== false,
    compress: parseCompress(flags.compress),
    quiet: flags.quiet === true,
    verbose: flags.verbose === true && flags.quiet !== true,
    progress: parseProgress(flags.progress),
    metadata: { perms: flags.perms !== false, times: flags.times !== false, owner: flags.owner === true },
    allowShrink: flags.allowShrink === true,
  };
}

/**
 * --owner where this process writes the destination (pull, sync): only as root; otherwise
 * dropped, with the note the summary shows.
 */
export function ownerIfRoot(w: MetadataWanted): { wanted: MetadataWanted; notes: string[] } {
  if (!w.owner || process.getuid?.() === 0) return { wanted: w, notes: [] };
  return { wanted: { ...w, owner: false }, notes: ["owner and group not applied (--owner): ssync is not running as root"] };
}

/**
 * cac 7.1 tells its argument parser (mri) that "acceptNew" is a boolean but mri sees
 * "accept-new" on the command line, so `--accept-new FILE` swallowed FILE as the option's
 * value. Declaring the kebab-case spelling as an alias makes mri treat it as a flag too.
 */
export function kebabBooleans<T>(cmd: T): T {
  const options = (cmd as { options?: { rawName: string; names: string[]; isBoolean?: boolean }[] }).options ?? [];
  for (const option of options) {
    // A negated flag (--no-refine) is cac's own: an alias would make mri set it true.
    if (!option.isBoolean || option.rawName.startsWith("--no-")) continue;
    for (const m of option.rawName.matchAll(/--([a-z0-9]+(?:-[a-z0-9]+)+)/g)) {
      if (!option.names.includes(m[1])) option.names.push(m[1]);
    }
  }
  return cmd;
}

/** Declares the engine options (the same for sync, push and pull) on a cac command. */
// deno-lint-ignore no-explicit-any
export function withEngineOptions<T extends { option: (...a: any[]) => T }>(cmd: T): T {
  return kebabBooleans(cmd
    .option("--block-size <size>", "Block size: a power of two from 4K to 1M (default 64K)")
    .option("--hash <alg>", "Block hash: poly1305 (keyed universal hash, default), hmac-sha256, blake3 (keyed), xxh128 (trusted data only)")
    .option("-n, --dry-run", "Report what would change; write nothing")
    .option("--verify", "After the sync, compare both sides again, independently; nothing may differ")
    .option("--json", "Print one JSON object on stdout, a failure included (schema 1: see README)")
    .option(
      "--compress <when>",
      "zstd for the data sent: auto (default: while the link is the bottleneck; never in a local sync), always, never",
    )
    .option("--allow-shrink", "Let a destination larger than the source lose the data past the source's end (refused otherwise)")
    .option("--inplace", "Write the destination in place: faster, but an interrupted sync leaves it torn (no journal)")
    .option("--no-times", "Leave the destination's modification time as the sync leaves it (default: the source's, to the nanosecond)")
    .option("--no-perms", "Leave the destination's permission bits alone (default: the source's rwx bits, plus u+rw; never setuid, setgid or sticky)")
    .option("--owner", "Give the destination the source's numeric owner and group: only when the writing side runs as root, never by a listener")
    .option("--no-refine", "Send whole differing blocks, not only their changed 4 KiB pages (for a listener that predates refinement)")
    .option(
      "--wait <seconds>",
      `When another ssync is writing the destination, wait this long for it to finish (default ${DEFAULT_WAIT_S}; 0: do not wait)`,
    )
    .option("-v, --verbose", "Also say what is being done: the address and host key, the session's settings")
    .option("-q, --quiet", "Print nothing but errors: no summary (unless --json), no warnings, no progress (unless --progress)")
    .option(
      "--progress [=json]",
      "A live progress line on stderr (default on a terminal); --progress=json: one NDJSON event per second on stderr",
    ));
}

/** The session's settings, for -v/--verbose: one line. */
export function describeSettings(o: EngineOptions, extra: string[] = []): string {
  return [
    `block size ${o.blockSize / 1024} KiB`,
    `hash ${o.hash}`,
    `compress ${o.compress}`,
    `refine ${o.refine ? "on" : "off"}`,
    o.inplace ? "in place" : "journaled",
    ...(o.dryRun ? ["dry run"] : []),
    ...extra,
  ].join(", ");
}
