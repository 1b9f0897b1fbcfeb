/**
 * A destination that changes only at commit: every write, hole and resize of the session
 * goes to a redo journal (journal-file.ts), and the destination itself keeps its old image
 * until `commit`, which runs, in this order:
 *   1. every journal record on disk (fsync);
 *   2. the space the writes need reserved in the destination (fallocate KEEP_SIZE: contents
 *      and size unchanged), so that applying cannot run out of space half-way; the journal's
 *      folder fsynced (its name is on disk);
 *   3. the COMMIT record, fsynced: the commit point;
 *   4. the records applied to the destination, in order; the metadata set; its fsync;
 *   5. the journal removed; its folder fsynced.
 * A crash before 3 leaves the old image (the next writer, or `ssync recover`, removes the
 * journal); from 3 on, the next writer re-applies the journal (storage/recover-journal.ts).
 *
 * Invariants:
 * - The session never reads what it wrote (its ranges do not overlap, and a range's digests
 *   are read before any write into it), so reads, extents and lent descriptors show the old
 *   image, cut or extended (as zeros) to the size the session set.
 * - The journal is made on the first change (O_EXCL: recovery removed any journal before):
 *   a sync that changes nothing writes nothing.
 * - Disposed without a commit, the journal is removed: the destination is its old image.
 *   A commit that fails after its commit point keeps the journal for the next writer.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import process from "node:process";
import type { Libc } from "../platform/libc.ts";
import { crashPoint } from "./crash-point.ts";
import { JournalWriter, RecordType } from "./journal-file.ts";
import { type FileMetadata, isEmptyMetadata } from "./file-metadata.ts";
import type { Extent, HoleMethod, LentFile, Storage, StorageKind } from "./storage.ts";
import { StorageError, storageError } from "./storage-error.ts";

export interface JournaledStorageInit {
  /** The destination itself: locked, writable, never written before commit. */
  readonly dest: Storage;
  readonly stat: { readonly dev: bigint; readonly ino: bigint };
  /** A block device's stable identity, recorded in the journal's header. */
  readonly deviceId?: string;
  /** Where the journal goes, and the folder that holds it (fsynced after it is removed). */
  readonly journalPath: string;
  readonly journalDir: string;
  /** Make `journalDir` when the first journal is written (the state folder for devices). */
  readonly makeJournalDir?: boolean;
  readonly libc: Libc | null;
}

const EOPNOTSUPP = 95;
const ENOSYS = 38;

/** fsync of a folder: a file created, renamed or removed in it is then on disk. */
export function syncDirectory(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.open(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY, (e, fd) => {
      if (e) return reject(e);
      fs.fsync(fd, (e2) => fs.close(fd, () => (e2 ? reject(e2) : resolve())));
    });
  });
}

export class JournaledStorage implements Storage {
  readonly path: string;
  readonly kind: StorageKind;
  readonly #dest: Storage;
  readonly #init: JournaledStorageInit;
  #journal: JournalWriter | null = null;
  #size: number;
  #state: "open" | "committed" | "applied" = "open";
  /** Operations under way; dispose waits for them (a session may end with writes in flight). */
  #inflight = 0;
  #idle: (() => void) | null = null;
  #closing: Promise<void> | null = null;

  constructor(init: JournaledStorageInit) {
    this.#init = init;
    this.#dest = init.dest;
    this.path = init.dest.path;
    this.kind = init.dest.kind;
    this.#size = init.dest.size;
  }

  get size(): number {
    return this.#size;
  }

  get punchesHoles(): boolean {
    return this.#dest.punchesHoles;
  }

  /** Bytes the journal holds (0 before the first change). */
  get journalBytes(): number {
    return this.#journal?.bytes ?? 0;
  }

  dataExtents(start: number, end: number): Promise<Extent[]> {
    return this.#dest.dataExtents(start, Math.min(end, this.#size));
  }

  async read(buf: Uint8Array, position: number): Promise<number> {
    const want = Math.max(0, Math.min(buf.length, this.#size - position));
    const n = want === 0 ? 0 : await this.#dest.read(buf.subarray(0, want), position);
    buf.fill(0, n, want); // grown past the old end: zeros, as ftruncate would make them
    return want;
  }

  lend<T>(use: (file: LentFile) => Promise<T>): Promise<T> {
    return this.#dest.lend(use);
  }

  write(buf: Uint8Array, position: number): Promise<void> {
    return this.#record("write", () => this.#writer().append(RecordType.WRITE, position, buf.length, buf));
  }

  async punchHole(position: number, length: number): Promise<HoleMethod> {
    const start = Math.max(0, position);
    const end = Math.min(position + length, this.#size);
    if (start < end) await this.#record("punch a hole in", () => this.#writer().append(RecordType.ZERO, start, end - start));
    return this.#dest.punchesHoles || this.kind === "block-device" ? "punched" : "zeroed";
  }

  async setSize(size: number): Promise<void> {
    if (this.kind === "block-device") return await this.#dest.setSize(size); // checks, changes nothing
    if (!Number.isSafeInteger(size) || size < 0) {
      throw storageError("resize", this.path, { code: "EINVAL", reason: `bad size ${size}` });
    }
    if (size === this.#size) return;
    await this.#record("resize", () => this.#writer().append(RecordType.SIZE, size, 0));
    this.#size = size;
  }

  /** FLUSH: what the journal holds is on disk (the destination is unchanged until commit). */
  async sync(): Promise<void> {
    if (this.#journal) await this.#record("flush", () => this.#journal!.sync());
  }

  commit(metadata?: FileMetadata): Promise<void> {
    return this.#record("commit", () => this.#commit(metadata));
  }

  async #commit(metadata: FileMetadata | undefined): Promise<void> {
    const journal = this.#journal;
    if (this.#state === "applied") return;
    if (!journal) {
      // No data changed: only the metadata, if any (an identical rerun still fixes a wrong mode or mtime).
      if (!isEmptyMetadata(metadata)) await this.#dest.commit(metadata);
      return;
    }
    if (this.#state === "open") {
      await this.#reserve(journal);
      await syncDirectory(this.#init.journalDir); // the journal's name is on disk before its commit point
      await journal.commit(); // before it, a failure leaves the destination unchanged
      this.#state = "committed";
    }
    try {
      await journal.apply(this.#dest, "apply");
      // After the last write (which moved the mtime); a crash before it leaves the data
      // committed and the metadata old: recovery re-applies the journal only, the next sync fixes it.
      await this.#dest.commit(metadata);
      crashPoint("destination-synced");
      await journal.close();
      fs.unlinkSync(journal.path);
      this.#state = "applied";
      crashPoint("journal-removed");
      await syncDirectory(this.#init.journalDir);
    } catch (e) {
      if (this.#state === "applied") throw storageError("commit", this.path, { cause: e });
      throw storageError("commit", this.path, {
        cause: e,
        message: `Cannot complete the sync of ${this.path}: ${(e as Error).message}; ` +
          `the next sync into it, or ssync recover, completes it`,
      });
    }
  }

  /**
   * Step 2 above: fallocate the written ranges (merged runs; contents and size unchanged).
   * Unsupported is fine. What it allocated stays allocated when it fails (no space) or the
   * process dies before the commit point: zeros that read as before, but take space until
   * the next sync rewrites them. (Giving them back is not safe: SEEK_DATA cannot tell our
   * reservation from a preallocation the file had, and punching that would change it.)
   */
  async #reserve(journal: JournalWriter): Promise<void> {
    const libc = this.#init.libc;
    if (!libc || this.kind !== "file") return;
    await journal.sync(); // every append settled: the records can be read back
    await this.#dest.lend(async (file) => {
      /** false when the filesystem cannot reserve. */
      const reserve = (run: { offset: number; length: number }): boolean => {
        const rc = libc.allocate(file.fd, run);
        if (rc === -EOPNOTSUPP || rc === -ENOSYS) return false;
        if (rc < 0) {
          const why = storageError("reserve the space for the changes to", this.path, { errno: rc });
          throw storageError("commit", this.path, { errno: rc, message: `${why.message}; its contents are unchanged` });
        }
        return true;
      };
      let run: { offset: number; length: number } | undefined;
      for await (const r of journal.records()) {
        if (r.type !== RecordType.WRITE) continue;
        if (run && run.offset + run.length === r.offset) {
          run.length += r.length;
          continue;
        }
        if (run && !reserve(run)) return;
        run = { offset: r.offset, length: r.length };
      }
      if (run) reserve(run);
    });
  }

  #writer(): JournalWriter {
    if (this.#journal) return this.#journal;
    if (this.#state !== "open") throw new Error(`${this.path}: written after its commit`);
    const { journalPath, journalDir, stat, deviceId } = this.#init;
    if (this.#init.makeJournalDir) fs.mkdirSync(journalDir, { recursive: true, mode: 0o700 });
    this.#journal = JournalWriter.create(journalPath, {
      version: 1,
      kind: this.kind,
      path: this.path,
      dev: String(stat.dev),
      ino: String(stat.ino),
      sizeBefore: this.#dest.size,
      ...(deviceId === undefined ? {} : { deviceId }),
      created: new Date().toISOString(),
      pid: process.pid,
      nonce: randomBytes(16).toString("hex"),
    });
    return this.#journal;
  }

  /** Runs one operation, counted so that dispose waits for it; refused once disposing. */
  async #record<T>(action: string, op: () => Promise<T>): Promise<T> {
    if (this.#closing) throw storageError(action, this.path, { code: "EBADF", reason: "already closed" });
    this.#inflight++;
    try {
      return await op();
    } catch (e) {
      if (e instanceof StorageError) throw e;
      if ((e as { code?: string }).code === "ENOSPC" && this.#journal) {
        throw storageError(action, this.path, {
          cause: e,
          message: `Cannot ${action} ${this.path}: no space left for its journal ${this.#journal.path} ` +
            `(it holds the changed blocks until the commit); ${this.path} is unchanged — free space, or use --inplace`,
        });
      }
      throw storageError(action, this.path, { cause: e });
    } finally {
      if (--this.#inflight === 0 && this.#idle) this.#idle();
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#inflight > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
      const journal = this.#journal;
      try {
        if (journal) await journal.close();
        if (journal && this.#state === "open") {
          try {
            fs.unlinkSync(journal.path); // never committed: the destination is its old image
          } catch {
            // Gone already; the next writer removes it otherwise.
          }
        } // committed and not applied: kept, the next writer completes the commit
      } finally {
        await this.#dest[Symbol.asyncDispose]();
      }
    })();
    return this.#closing;
  }
}
