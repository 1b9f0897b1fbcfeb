/**
 * What a dry run sees for a destination that does not exist yet: an empty, read-only file.
 * Nothing is created on disk.
 */
import type { Extent, HoleMethod, LentFile, Storage, StorageKind } from "./storage.ts";
import { storageError } from "./storage-error.ts";

export class EmptyStorage implements Storage {
  readonly path: string;
  readonly kind: StorageKind = "file";
  readonly size = 0;
  readonly punchesHoles = false;

  constructor(path: string) {
    this.path = path;
  }

  dataExtents(_start: number, _end: number): Promise<Extent[]> {
    return Promise.resolve([]);
  }

  read(_buf: Uint8Array, _position: number): Promise<number> {
    return Promise.resolve(0);
  }

  write(_buf: Uint8Array, _position: number): Promise<void> {
    return Promise.reject(this.#readOnly("write"));
  }

  punchHole(_position: number, _length: number): Promise<HoleMethod> {
    return Promise.reject(this.#readOnly("punch a hole in"));
  }

  setSize(_size: number): Promise<void> {
    return Promise.reject(this.#readOnly("resize"));
  }

  sync(): Promise<void> {
    return Promise.reject(this.#readOnly("flush"));
  }

  commit(): Promise<void> {
    return Promise.reject(this.#readOnly("commit"));
  }

  /** There is no descriptor: nothing exists to read (its extents are empty, so no job asks). */
  lend<T>(_use: (file: LentFile) => Promise<T>): Promise<T> {
    return Promise.reject(storageError("read", this.path, { code: "EBADF", reason: "it does not exist yet (dry run)" }));
  }

  #readOnly(action: string): Error {
    return storageError(action, this.path, { code: "EBADF", reason: "opened read-only (dry run)" });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}
