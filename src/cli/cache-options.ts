/**
 * The signature cache's command-line side (spec §5.10): `--cache-max-age AGE` (listen, pull),
 * `--no-cache` (push, pull: neither offered nor used; listen: none kept), and where the cache
 * lives: the listener's beside its host key, a pull's in the user's state folder.
 */
import nodePath from "node:path";
import { DEFAULT_CACHE_MAX_AGE_MS } from "../session/cache-session.ts";
import { stateJournalDir } from "../storage/work-files.ts";
import { UsageError } from "../util/errors.ts";

const UNITS: Record<string, number> = { "": 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export const CACHE_MAX_AGE_HELP =
  `Re-read the destination in full when its cached signatures are older than AGE (a number with s, m, h or d; default ${DEFAULT_CACHE_MAX_AGE_MS / 86_400_000}d; 0: always)`;

/** AGE in ms: a number of seconds, or with a unit s, m, h or d (`7d`); 0 means the cache is never used. */
export function parseCacheMaxAge(text: string | number | undefined): number {
  if (text === undefined) return DEFAULT_CACHE_MAX_AGE_MS;
  const m = /^(\d+(?:\.\d+)?)\s*([smhd]?)$/i.exec(String(text).trim());
  const ms = m ? Math.round(Number(m[1]) * UNITS[m[2].toLowerCase()]) : NaN;
  if (!Number.isSafeInteger(ms) || ms < 0 || ms > 3650 * 86_400_000) {
    throw new UsageError(`Invalid --cache-max-age ${text}: give a number with s, m, h or d, such as 7d (at most 3650d); 0 to always read in full`);
  }
  return ms;
}

/** A pull's signatures: beside the state folder's journals (`…/ssync/signatures`). */
export function clientCacheDir(): string {
  return nodePath.join(nodePath.dirname(stateJournalDir()), "signatures");
}

/** A listener's: beside its host key. */
export function listenerCacheDir(hostKeyFile: string): string {
  return nodePath.join(nodePath.dirname(nodePath.resolve(hostKeyFile)), "signatures");
}
