/**
 * A new destination, written under a hidden name beside its own (`.NAME.ssync-partial`) and
 * renamed over NAME at commit: metadata, fsync, rename, fsync of the folder. Until then NAME does not
 * exist, so nobody can read half a file under it; after a crash the partial file stays, and
 * the next sync to NAME resumes from it (only what it lacks is sent).
 *
 * Invariants:
 * - The rename happens only while `partialPath` still names the file this store holds.
 * - Disposed without a commit, the partial file stays, unless this very store created it
 *   and never wrote to it (a refused or empty sync leaves nothing behind).
 */
import fs from "node:fs";
import { crashPoint } from "./crash-point.ts";
import { syncFolderShared } from "./shared-folder-sync.ts";
import type { FileMetadata } from "./file-metadata.ts";
import type { Extent, HoleMethod, LentFile, Storage, StorageKind } from "./storage.ts";
import { storageError } from "./storage-error.ts";

export interface PartialStorageInit {
  /** The partial file's store (locked, writable), named after the final path in messages. */
  readonly dest: Storage;
  readonly stat: { readonly dev: bigint; readonly ino: bigint };
  readonly partialPath: string;
  readonly finalPath: string;
  /** The folder holding both. */
  readonly dir: string;
  /** This store created the partial file (it did not exist before). */
  readonly created: boolean;
}

export class PartialStorage implements Storage {
  readonly path: string;
  readonly kind: StorageKind = "file";
  readonly #dest: Storage;
  readonly #init: PartialStorageInit;
  #changed = false;
  #committed = false;

  constructor(init: PartialStorageInit) {
    this.#init = init;
    this.#dest = init.dest;
    this.path = init.dest.path;
  }

  get size(): number {
    return this.#dest.size;
  }

  get punchesHoles(): boolean {
    return this.#dest.punchesHoles;
  }

  dataExtents(start: number, end: number): Promise<Extent[]> {
    return this.#dest.dataExtents(start, end);
  }

  read(buf: Uint8Array, position: number): Promise<number> {
    return this.#dest.read(buf, position);
  }

  lend<T>(use: (file: LentFile) => Promise<T>): Promise<T> {
    return this.#dest.lend(use);
  }

  async write(buf: Uint8Array, position: number): Promise<void> {
    this.#changed = true;
    await this.#dest.write(buf, position);
    crashPoint("partial-write");
  }

  punchHole(position: number, length: number): Promise<HoleMethod> {
    return this.#dest.punchHole(position, length);
  }

  setSize(size: number): Promise<void> {
    return this.#dest.setSize(size);
  }

  sync(): Promise<void> {
    return this.#dest.sync();
  }

  async commit(metadata?: FileMetadata): Promise<void> {
    if (this.#committed) return;
    const { partialPath, finalPath, dir, stat } = this.#init;
    // The metadata before the rename: the name never shows the new data with the wrong mode or mtime.
    await this.#dest.commit(metadata);
    crashPoint("partial-synced");
    let now: fs.BigIntStats;
    try {
      now = fs.lstatSync(partialPath, { bigint: true });
    } catch (e) {
      throw storageError("commit", this.path, { cause: e, reason: `its partial file ${partialPath} is gone` });
    }
    if (now.dev !== stat.dev || now.ino !== stat.ino) {
      throw storageError("commit", this.path, { code: "EAGAIN", reason: `its partial file ${partialPath} was replaced` });
    }
    // The name is still free (an --inplace writer, or another tool, may have made it since):
    // a file that appeared meanwhile is never replaced. (The window between this check and the
    // rename is left: renameat2's RENAME_NOREPLACE is not in node:fs.)
    let taken = true;
    try {
      fs.lstatSync(finalPath);
    } catch {
      taken = false;
    }
    if (taken) throw storageError("commit", this.path, { code: "EEXIST", reason: `it was created meanwhile by another writer; ${partialPath} is kept` });
    try {
      fs.renameSync(partialPath, finalPath);
    } catch (e) {
      throw storageError("commit", this.path, { cause: e });
    }
    this.#committed = true;
    crashPoint("renamed");
    await syncFolderShared(dir); // shared with the files renamed into it meanwhile
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      if (!this.#committed && this.#init.created && !this.#changed) removeIfSame(this.#init.partialPath, this.#init.stat);
    } finally {
      await this.#dest[Symbol.asyncDispose]();
    }
  }
}

function removeIfSame(path: string, stat: { dev: bigint; ino: bigint }): void {
  try {
    const now = fs.lstatSync(path, { bigint: true });
    if (now.dev === stat.dev && now.ino === stat.ino) fs.unlinkSync(path);
  } catch {
    // Gone already.
  }
}
