/**
 * --bwlimit RATE: bytes per second of wire data. RATE is a number (decimals allowed) with an
 * optional unit K, M or G, 1024-based like --block-size's and rsync's (50M = 50 MiB/s =
 * 52428800 bytes/s); "B", "iB" and "/s" may follow (50MiB/s). A bare number is bytes per
 * second, as a bare --block-size is bytes; 0 means no limit.
 */
import { MAX_RECORD } from "../../protocol/constants.ts";
import { UsageError } from "../util/errors.ts";

const UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/**
 * The lowest limit: a record passes whole, so the largest one (MAX_RECORD, 1 MiB) takes
 * 16 s at 64K, well inside the idle timeout (60 s by default) of the peer that waits for it
 * (the listener's for a push, the client's for a listener's limit).
 */
export const MIN_BWLIMIT = 64 * 1024;
/** The highest: far beyond any link (a typo'd unit, not a limit). */
const MAX_BWLIMIT = 1024 ** 4;

/** Bytes per second, or undefined for no limit (absent or 0). */
export function parseBwlimit(text: string | number | undefined): number | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?(?:\/s)?$/i.exec(String(text).trim());
  const n = m ? Math.floor(Number(m[1]) * UNITS[m[2].toLowerCase()]) : NaN;
  if (n === 0) return undefined;
  if (!Number.isSafeInteger(n) || n > MAX_BWLIMIT) {
    throw new UsageError(`Invalid --bwlimit ${text}: give bytes per second with K, M or G (1024-based), such as 50M; 0 for no limit`);
  }
  if (n < MIN_BWLIMIT) {
    throw new UsageError(
      `Invalid --bwlimit ${text}: the lowest limit is 64K (${MIN_BWLIMIT} bytes/s: a ${MAX_RECORD >> 20} MiB record must cross ` +
        `well within the idle timeout); units are bytes per second with K, M or G, such as 50M`,
    );
  }
  return n;
}
