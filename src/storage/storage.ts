/**
 * What the engine needs from a file or block device.
 *
 * Invariants:
 * - `size` is the apparent size in bytes (block devices: the device size, never from fstat).
 * - `dataExtents` never omits data: a range it leaves out reads as zeros. Without
 *   SEEK_DATA (fallback) it returns the whole range as one extent and the engine's
 *   zero detection finds the holes.
 * - Only a store opened for writing accepts write, punchHole, setSize, sync and commit.
 */
import type { FileMetadata } from "./file-metadata.ts";

export interface Extent {
  readonly offset: number;
  readonly length: number;
}

/**
 * An open descriptor lent to a scan job for the length of one `Storage.lend` call. Worker
 * threads read through it (storage/read-lent.ts); nothing ever opens `path`, which only
 * names the file in messages. `dev` and `ino` identify the file behind `fd`.
 */
export interface LentFile {
  readonly fd: number;
  readonly dev: bigint;
  readonly ino: bigint;
  readonly path: string;
}

export type StorageKind = "file" | "block-device";

/** How a hole was made: a real hole (fallocate, discard) or zeros written (fallback). */
export type HoleMethod = "punched" | "zeroed";

export interface Storage extends AsyncDisposable {
  readonly path: string;
  readonly kind: StorageKind;
  /** Current apparent size in bytes; follows setSize. */
  readonly size: number;
  /** True when punchHole on this file frees space cheaply (a file with FFI hole punching). */
  readonly punchesHoles: boolean;
  /** Data extents intersecting [start, end), clipped to it, ascending, non-overlapping. */
  dataExtents(start: number, end: number): Promise<Extent[]>;
  /** Reads up to buf.length bytes at position; returns the count (short only at end of file). */
  read(buf: Uint8Array, position: number): Promise<number>;
  /** Writes all of buf at position. */
  write(buf: Uint8Array, position: number): Promise<void>;
  /** Makes [position, position+length) read as zeros, as a hole where the platform can. */
  punchHole(position: number, length: number): Promise<HoleMethod>;
  /** Files: truncate or extend (sparse). Block devices: refuses a size above the device size. */
  setSize(size: number): Promise<void>;
  /** What is written so far is on disk (fsync; a journaled store: its journal). */
  sync(): Promise<void>;
  /**
   * Makes everything written the destination's content, durably: in place, an fsync; a
   * journaled store, its journal applied (journaled-storage.ts); a partial file, renamed over
   * its name (partial-storage.ts). Called once, after the sync's roots matched; disposing a
   * store without it leaves the destination's old image (or the partial file, to resume).
   * `metadata` (file-metadata.ts) is set after the last write and before the fsync that makes
   * it durable (a partial file: before its rename); a block device ignores it.
   */
  commit(metadata?: FileMetadata): Promise<void>;
  /**
   * Runs `use` with this store's own descriptor, counted like any other operation: the
   * descriptor stays open, so its number cannot name another file, until `use` settles.
   */
  lend<T>(use: (file: LentFile) => Promise<T>): Promise<T>;
}
