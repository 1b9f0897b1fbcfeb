/**
 * A Storage that delegates every call to a real store (a real file or device, no mock) and
 * records what was asked of the disk: writes and punchHole calls (offset, length), setSize,
 * sync, reads, lends.
 *
 * Scan jobs (digests on the destination, diffs on the source) read in worker threads through
 * the descriptor `lend` hands out (storage/read-lent.ts): those reads never pass through
 * `read` and are not in `reads`. `lends` counts them, one per job. Writes and punches
 * always go through this object: the engine has no other way to change the file.
 */
import type { FileMetadata } from "../../src/storage/file-metadata.ts";
import type { Extent, HoleMethod, LentFile, Storage, StorageKind } from "../../src/storage/storage.ts";

export interface IoRange {
  readonly offset: number;
  readonly length: number;
}

export class RecordingStorage implements Storage {
  readonly #inner: Storage;
  readonly writes: IoRange[] = [];
  readonly punches: IoRange[] = [];
  readonly reads: IoRange[] = [];
  readonly setSizes: number[] = [];
  syncs = 0;
  commits = 0;
  lends = 0;

  constructor(inner: Storage) {
    this.#inner = inner;
  }

  get path(): string {
    return this.#inner.path;
  }

  get kind(): StorageKind {
    return this.#inner.kind;
  }

  get size(): number {
    return this.#inner.size;
  }

  get punchesHoles(): boolean {
    return this.#inner.punchesHoles;
  }

  dataExtents(start: number, end: number): Promise<Extent[]> {
    return this.#inner.dataExtents(start, end);
  }

  read(buf: Uint8Array, position: number): Promise<number> {
    this.reads.push({ offset: position, length: buf.length });
    return this.#inner.read(buf, position);
  }

  write(buf: Uint8Array, position: number): Promise<void> {
    this.writes.push({ offset: position, length: buf.length });
    return this.#inner.write(buf, position);
  }

  punchHole(position: number, length: number): Promise<HoleMethod> {
    this.punches.push({ offset: position, length });
    return this.#inner.punchHole(position, length);
  }

  setSize(size: number): Promise<void> {
    this.setSizes.push(size);
    return this.#inner.setSize(size);
  }

  sync(): Promise<void> {
    this.syncs++;
    return this.#inner.sync();
  }

  commit(metadata?: FileMetadata): Promise<void> {
    this.commits++;
    return this.#inner.commit(metadata);
  }

  lend<T>(use: (file: LentFile) => Promise<T>): Promise<T> {
    this.lends++;
    return this.#inner.lend(use);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#inner[Symbol.asyncDispose]();
  }

  /** Writes sorted by offset, as [offset, length] pairs (for exact comparisons). */
  sortedWrites(): [number, number][] {
    return sorted(this.writes);
  }

  /** punchHole calls sorted by offset, as [offset, length] pairs. */
  sortedPunches(): [number, number][] {
    return sorted(this.punches);
  }
}

function sorted(list: readonly IoRange[]): [number, number][] {
  return list.map((r): [number, number] => [r.offset, r.length]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}
