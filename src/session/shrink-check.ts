/**
 * A sync never silently cuts data off the end of its destination. A destination file larger
 * than the source whose part past the source's end holds data (a byte that is not zero) is
 * cut to the source's size only when the user allowed it (--allow-shrink; OPEN_ALLOW_SHRINK
 * for a listener); otherwise the sync is refused before anything changes, dry runs too, so a
 * dry run foretells the refusal. A part that reads as zeros (holes, or zeros written) needs no
 * permission: cutting it loses nothing. Block devices never change size. A partial file being
 * resumed is ssync's own, not the user's: it is never checked.
 */
import { Buffer } from "node:buffer";
import { PartialStorage } from "../storage/partial-storage.ts";
import type { Storage } from "../storage/storage.ts";
import { ErrnoError } from "../util/errors.ts";

/** The cut-off part is read in pieces this big, and only its data extents. */
const SCAN_BYTES = 1 << 20;
const ZEROS = new Uint8Array(SCAN_BYTES);

/** Throws ErrnoError EPERM when shrinking `store` to `size` would drop data and `allowShrink` is not set. */
export async function checkShrink(
  store: Storage,
  o: { size: number; allowShrink: boolean; name: string; signal?: AbortSignal },
): Promise<void> {
  if (o.allowShrink || store.kind !== "file" || o.size >= store.size || store instanceof PartialStorage) return;
  const at = await firstDataByte(store, { from: o.size, signal: o.signal });
  if (at === undefined) return;
  throw new ErrnoError(
    "EPERM",
    `Cannot shrink ${o.name} from ${store.size} to ${o.size} bytes (the source's size): it holds data past the new end ` +
      `(at byte ${at}); give --allow-shrink to cut it off`,
  );
}

/** The offset of the first byte from `from` to the end that is not zero, or undefined. */
async function firstDataByte(store: Storage, o: { from: number; signal?: AbortSignal }): Promise<number | undefined> {
  const buf = new Uint8Array(SCAN_BYTES);
  for (const e of await store.dataExtents(o.from, store.size)) {
    for (let pos = e.offset; pos < e.offset + e.length; pos += SCAN_BYTES) {
      o.signal?.throwIfAborted();
      const n = await store.read(buf.subarray(0, Math.min(SCAN_BYTES, e.offset + e.length - pos)), pos);
      if (n === 0) break;
      if (Buffer.compare(buf.subarray(0, n), ZEROS.subarray(0, n)) === 0) continue;
      return pos + buf.subarray(0, n).findIndex((b) => b !== 0);
    }
  }
  return undefined;
}
