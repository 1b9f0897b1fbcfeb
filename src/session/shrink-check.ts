/**
 * A sync never silently cuts data off the end of its destination. A destination file larger
 * than the source whose part past the source's end holds data (a byte that is not zero) is
 * cut to the source's size only when the user allowed it (--allow-shrink; OPEN_ALLOW_SHRINK
 * for a listener); otherwise the sync is refused before anything changes, dry runs too, so a
 * dry run foretells the refusal. A part that reads as zeros (holes, or zeros written) needs no
 * permission: cutting it loses nothing. Block devices never change size. A partial file being
 * resumed is ssync's own, not the user's: it is never checked.
 *
 * Invariant: the check's work is bounded whatever the file and the size a peer asks for: it
 * reads only the part's data extents (found a window at a time, so a fragmented file never
 * yields an unbounded list), at most SHRINK_SCAN_BYTES of them. A part with more than that
 * which is not a known hole counts as holding data: so does any part larger than that where
 * holes cannot be found (no SEEK_DATA: the whole part is one extent). The signal stops it
 * between pieces.
 */
import { Buffer } from "node:buffer";
import process from "node:process";
import { PartialStorage } from "../storage/partial-storage.ts";
import type { Storage } from "../storage/storage.ts";
import { ErrnoError } from "../util/errors.ts";
import { formatBytes } from "../util/format-bytes.ts";

/** At most this much of the cut-off part's data is read. */
export const SHRINK_SCAN_BYTES = 64 << 20;
/** The cut-off part is read in pieces this big. */
const SCAN_BYTES = 1 << 20;
/** Its data extents are asked for this much of the file at a time. */
const EXTENT_WINDOW = 1 << 30;
const ZEROS = new Uint8Array(SCAN_BYTES);

/** Throws ErrnoError EPERM when shrinking `store` to `size` could drop data and `allowShrink` is not set. */
export async function checkShrink(
  store: Storage,
  o: { size: number; allowShrink: boolean; name: string; signal?: AbortSignal },
): Promise<void> {
  if (o.allowShrink || store.kind !== "file" || o.size >= store.size || store instanceof PartialStorage) return;
  const budget = scanBudget();
  const at = await firstDataByte(store, { from: o.size, budget, signal: o.signal });
  if (at === undefined) return;
  const why = at === "unchecked"
    ? `more than ${formatBytes(budget)} past the new end may hold data (it is not known to be holes), too much to check`
    : `it holds data past the new end (at byte ${at})`;
  throw new ErrnoError("EPERM", `Cannot shrink ${o.name} from ${store.size} to ${o.size} bytes (the source's size): ${why}; give --allow-shrink to cut it off`);
}

/**
 * The offset of the first byte from `from` to the end that is not zero; undefined when there
 * is none; "unchecked" when the data extents hold more than `budget` bytes, all zeros as far
 * as they were read.
 */
async function firstDataByte(
  store: Storage,
  o: { from: number; budget: number; signal?: AbortSignal },
): Promise<number | "unchecked" | undefined> {
  const buf = new Uint8Array(SCAN_BYTES);
  let left = o.budget;
  for (let window = o.from; window < store.size; window += EXTENT_WINDOW) {
    o.signal?.throwIfAborted();
    for (const e of await store.dataExtents(window, Math.min(store.size, window + EXTENT_WINDOW))) {
      for (let pos = e.offset; pos < e.offset + e.length; pos += SCAN_BYTES) {
        o.signal?.throwIfAborted();
        if (left === 0) return "unchecked";
        const want = Math.min(SCAN_BYTES, e.offset + e.length - pos, left);
        const n = await store.read(buf.subarray(0, want), pos);
        left -= want;
        if (n === 0) break;
        if (Buffer.compare(buf.subarray(0, n), ZEROS.subarray(0, n)) === 0) continue;
        return pos + buf.subarray(0, n).findIndex((b) => b !== 0);
      }
    }
  }
  return undefined;
}

/** SHRINK_SCAN_BYTES, or (tests only) SSYNC_TEST_SHRINK_SCAN_BYTES: a scan long enough to cut short. */
function scanBudget(): number {
  let text: string | undefined;
  try {
    text = process.env.SSYNC_TEST_SHRINK_SCAN_BYTES;
  } catch {
    return SHRINK_SCAN_BYTES; // Deno without --allow-env
  }
  const n = Number(text);
  return text !== undefined && Number.isSafeInteger(n) && n > 0 ? n : SHRINK_SCAN_BYTES;
}
