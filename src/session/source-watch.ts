/**
 * Notices a regular-file source that changes while a sync reads it. A root hash cannot: both
 * sides hash what was read and written, so a block rewritten after it was read leaves the
 * roots equal and the destination a mix of two images.
 *
 * A stamp is the file's size, mtime and ctime (ns), from fstat on the store's own descriptor
 * (`Storage.lend`; the file is never reopened by name). One is taken when the sync starts
 * (and must match the size the store was opened with); `check` takes another, one fstat,
 * after each range is read and right before COMMIT, and throws SourceChangedError on any
 * difference.
 *
 * What stays undetected:
 * - a write that changes no size and leaves mtime and ctime as they were: on a filesystem
 *   with coarse timestamps (ext4 without multigrain timestamps: one clock tick, a few ms) a
 *   write in the same tick as the last change before the first stamp (the stamp is in ns:
 *   statx through FFI, fstat on Node; only Deno without FFI rounds mtime to ms);
 * - a store written through a shared mapping whose pages are already dirty (mtime moves only
 *   at the first write fault after writeback);
 * - block devices: their size, mtime and ctime do not follow writes, so they are not
 *   checked at all (`start` returns undefined; the summary says so).
 */
import { fileStamp, type FileStamp } from "../storage/file-stamp.ts";
import type { Storage } from "../storage/storage.ts";
import { SourceChangedError } from "../util/errors.ts";

type Stamp = FileStamp;

export class SourceWatch {
  readonly #store: Storage;
  readonly #first: Stamp;

  private constructor(store: Storage, first: Stamp) {
    this.#store = store;
    this.#first = first;
  }

  /**
   * The first stamp of a regular-file source (`first`, when the caller took it already); undefined
   * for a block device. Throws SourceChangedError when the file's size is no longer the one
   * the store was opened with.
   */
  static async start(store: Storage, o: { first?: FileStamp } = {}): Promise<SourceWatch | undefined> {
    if (store.kind !== "file") return undefined;
    const first = o.first ?? await stampOf(store);
    const watch = new SourceWatch(store, first);
    if (first.size !== BigInt(store.size)) throw watch.#changed(`size ${store.size} → ${first.size}`);
    return watch;
  }

  /** The stamp taken at `start`: its mtime and mode are what the destination takes (file-metadata.ts). */
  get first(): FileStamp {
    return this.#first;
  }

  /** Throws SourceChangedError when the source is no longer as it was at `start`. */
  async check(): Promise<void> {
    const now = await stampOf(this.#store);
    const was = this.#first;
    if (now.size !== was.size) throw this.#changed(`size ${was.size} → ${now.size}`);
    if (now.mtimeNs !== was.mtimeNs || now.ctimeNs !== was.ctimeNs) throw this.#changed("modified");
  }

  #changed(change: string): SourceChangedError {
    return SourceChangedError.detected(this.#store.path, change);
  }
}

export function stampOf(store: Storage): Promise<Stamp> {
  // deno-lint-ignore require-await -- lend takes a promise-returning use
  return store.lend(async (file) => {
    return fileStamp(file.fd);
  });
}
