/**
 * Frees a dead buffer's memory now instead of at V8's next collection.
 *
 * A sync allocates a MiB-sized buffer per job and per record (socket chunks, ciphertexts,
 * plaintexts, decompressed DATA); V8 frees their backing stores only when it collects, which
 * under this load lets tens of MiB of dead buffers pile up between collections (issue 9: peak
 * RSS). `ArrayBuffer.prototype.transfer(0)` detaches the buffer, and its backing store is
 * freed at once.
 *
 * Invariant, the caller's to keep: the caller owns the view's whole ArrayBuffer (with
 * `headBytes`, those leading bytes too) and nothing reads it any more — no other view of it
 * (a payload sliced out of it, a socket or worker still writing it). Every view of a released
 * buffer reads as empty from then on. Never call it for a buffer someone else may still read.
 *
 * Checked here, so that a mistaken call does nothing: the view must span its ArrayBuffer
 * exactly (from `headBytes` to the end), so a subarray of a larger buffer — a slot of a
 * shared arena, a pooled small Buffer, a payload inside a job's read buffer — is never
 * detached; a SharedArrayBuffer, an already detached buffer, or a runtime without
 * `transfer` leave it to the GC.
 */

type Transferable = ArrayBuffer & { transfer?: (length?: number) => ArrayBuffer; readonly detached?: boolean };

/**
 * Detaches `view`'s ArrayBuffer when `view` covers all of it, or all of it after the first
 * `headBytes` bytes (a record's payload behind its header); returns whether it did.
 */
export function releaseBuffer(view: ArrayBufferView | undefined, options: { headBytes?: number } = {}): boolean {
  if (view === undefined) return false;
  const buffer = view.buffer as Transferable;
  const head = options.headBytes ?? 0;
  if (!(buffer instanceof ArrayBuffer) || typeof buffer.transfer !== "function" || buffer.detached === true) return false;
  if (view.byteOffset !== head || view.byteOffset + view.byteLength !== buffer.byteLength || buffer.byteLength === 0) {
    return false;
  }
  try {
    buffer.transfer(0);
    return true;
  } catch {
    return false; // not detachable (e.g. a WebAssembly memory): the GC frees it
  }
}
