/**
 * `Storage` over an open OS file descriptor: a regular file or a block device.
 *
 * Invariants:
 * - The descriptor stays open until every read/write/sync started before dispose has
 *   settled; dispose then closes it and runs `release` (unlock) exactly once.
 * - Positional I/O only (pread/pwrite through node:fs callbacks); the descriptor's file
 *   position is used by nothing but lseek(SEEK_DATA/SEEK_HOLE), so they do not interfere.
 * - With `libc` null (portable path): dataExtents returns the whole range as one extent and
 *   punchHole writes zeros; both are still correct, only slower and less sparse.
 * - Block devices never change size; `size` stays the device size.
 * - A store that created its file in place (`createdAt`) and is disposed without a commit and
 *   without a write removes it: a refused or failed run leaves no empty file behind.
 * - Write-back starts early: after each WRITE_BACK_BYTES written (data or zeros), an fdatasync
 *   runs on the thread pool, never awaited by the writes: at most one per store and
 *   WRITE_BACKS_AT_ONCE per process (a round that finds them busy is skipped: it is only a
 *   head start), none once the store is closing. The disk then writes while the sync goes
 *   on, and the fsync of sync() or commit() finds little left to do.
 * - A failed early write-back fails the store's next write, sync() and commit() (before the
 *   commit sets any metadata): the kernel reports a write-back error to a descriptor once, so
 *   a later fsync could succeed after data was lost. Durability is otherwise unchanged: the
 *   kernel may write dirty pages back at any time anyway.
 */
import fs from "node:fs";
import { type ByteRange, type Libc } from "../platform/libc.ts";
import { applyMetadata, type FileMetadata, isEmptyMetadata } from "./file-metadata.ts";
import type { Extent, HoleMethod, LentFile, Storage, StorageKind } from "./storage.ts";
import { StorageError, storageError } from "./storage-error.ts";

const ENXIO = 6;
const EINVAL = 22;
const ENOSYS = 38;
const ENOTTY = 25;
const EOPNOTSUPP = 95;
const EBUSY = 16;
const UNSUPPORTED = new Set([-EOPNOTSUPP, -ENOSYS, -ENOTTY, -EINVAL]);
/**
 * Device zeroing falls back to writing zeros on these too: the kernel refuses fallocate and
 * BLKZEROOUT with EBUSY when another descriptor holds the device exclusively (our own O_EXCL
 * claim is one, on some runtimes), since it must drop the device's page cache.
 */
const DEVICE_ZERO_REFUSED = new Set([...UNSUPPORTED, -EBUSY]);

/**
 * Bytes written between two early write-backs: 30 ms of an NVMe disk's writing, half a second
 * of a hard disk's. Dirty pages otherwise wait for the final fsync unless they pass the
 * kernel's background threshold (10% of available memory by default): on a machine with GiBs
 * of RAM a sync's writes rarely do (here, 24 GiB: a 1.6 GiB first copy ended in a 0.9 s fsync
 * with both cores idle).
 */
export const WRITE_BACK_BYTES = 64 << 20;
/**
 * Early write-backs running in this process at once, all stores together: each holds one of
 * Node's four thread-pool threads, which every other file call of every session waits for.
 */
export const WRITE_BACKS_AT_ONCE = 1;
let writeBacksRunning = 0;

/** Zeros written by the portable hole path; never written to. */
const ZEROS = new Uint8Array(1 << 20);
/** Block-device zeroing is done in steps this big, yielding to the event loop between them. */
const DEVICE_ZERO_STEP = 256 * 1024 * 1024;
/** Block-device discard/zero-out ranges are aligned to this (any logical block size divides it). */
const DEVICE_ALIGN = 4096;

export interface FdStorageInit {
  readonly path: string;
  readonly kind: StorageKind;
  readonly fd: number;
  /** fstat of `fd`: its device and inode identify the file to the workers that read it. */
  readonly stat: { readonly dev: bigint; readonly ino: bigint };
  readonly size: number;
  readonly writable: boolean;
  /** FFI bindings, or null for the portable path. */
  readonly libc: Libc | null;
  /** Releases the lock; called once, after the descriptor is closed. */
  readonly release?: () => void;
  /** This store created the file (an in-place write), named so: removed when disposed unwritten and uncommitted. */
  readonly createdAt?: string;
}

function pread(fd: number, buf: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buf, 0, buf.length, position, (err, n) => err ? reject(err) : resolve(n))
  );
}

function pwrite(fd: number, buf: Uint8Array, position: number): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.write(fd, buf, 0, buf.length, position, (err, n) => err ? reject(err) : resolve(n))
  );
}

function callback(run: (cb: (err: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => run((err) => err ? reject(err) : resolve()));
}

export class FdStorage implements Storage {
  readonly path: string;
  readonly kind: StorageKind;
  readonly #fd: number;
  readonly #writable: boolean;
  readonly #libc: Libc | null;
  readonly #release: (() => void) | undefined;
  readonly #lent: LentFile;
  readonly #createdAt: string | undefined;
  #written = false;
  #committed = false;
  #size: number;
  #inflight = 0;
  #idle: (() => void) | null = null;
  #closing: Promise<void> | null = null;
  /** Set when the filesystem or device refused SEEK_DATA or hole punching once. */
  #noSeekData = false;
  #noPunch = false;
  #noZeroOut = false;
  /** Bytes written since the last early write-back started. */
  #unsynced = 0;
  /** The early write-back running, if any (it never rejects). */
  #writeBack: Promise<void> | undefined;
  /** The first failure of an early write-back: the next write, sync() and commit() throw it. */
  #writeBackError: unknown;

  constructor(init: FdStorageInit) {
    this.path = init.path;
    this.kind = init.kind;
    this.#fd = init.fd;
    this.#size = init.size;
    this.#writable = init.writable;
    this.#libc = init.libc;
    this.#release = init.release;
    this.#lent = Object.freeze({ fd: init.fd, dev: init.stat.dev, ino: init.stat.ino, path: init.path });
    this.#createdAt = init.createdAt;
  }

  get size(): number {
    return this.#size;
  }

  get punchesHoles(): boolean {
    return this.kind === "file" && this.#libc !== null && !this.#noPunch;
  }

  /** True when this instance uses FFI (SEEK_DATA, fallocate, ioctls). */
  get ffi(): boolean {
    return this.#libc !== null;
  }

  dataExtents(start: number, end: number): Promise<Extent[]> {
    return this.#run("find data in", false, () => Promise.resolve(this.#dataExtents(start, end)));
  }

  #dataExtents(start: number, end: number): Extent[] {
    start = Math.max(0, start);
    end = Math.min(end, this.#size);
    if (start >= end) return [];
    const libc = this.#libc;
    if (!libc || this.kind === "block-device" || this.#noSeekData) {
      return [{ offset: start, length: end - start }];
    }
    const out: Extent[] = [];
    let pos = start;
    while (pos < end) {
      const data = libc.seekData(this.#fd, pos);
      if (data === -ENXIO) break;
      if (data < 0) {
        if (!UNSUPPORTED.has(data)) throw storageError("find data in", this.path, { errno: data });
        this.#noSeekData = true;
        out.push({ offset: pos, length: end - pos });
        break;
      }
      if (data >= end) break;
      let hole = libc.seekHole(this.#fd, data);
      if (hole === -ENXIO) hole = end; // the file shrank under us: keep the range, reads say 0
      if (hole < 0) throw storageError("find holes in", this.path, { errno: hole });
      const stop = Math.min(hole, end);
      out.push({ offset: data, length: stop - data });
      pos = stop;
    }
    return out;
  }

  read(buf: Uint8Array, position: number): Promise<number> {
    return this.#run("read", false, async () => {
      let done = 0;
      while (done < buf.length) {
        const n = await pread(this.#fd, done === 0 ? buf : buf.subarray(done), position + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    });
  }

  write(buf: Uint8Array, position: number): Promise<void> {
    this.#written = true;
    return this.#run("write", true, () => this.#writeAll(buf, position));
  }

  /** Called inside #run (the store stays open); counts the bytes towards the next early write-back. */
  async #writeAll(buf: Uint8Array, position: number): Promise<void> {
    this.#throwIfWriteBackFailed("write");
    let done = 0;
    while (done < buf.length) {
      done += await pwrite(this.#fd, done === 0 ? buf : buf.subarray(done), position + done);
    }
    this.#unsynced += buf.length;
    if (this.#unsynced >= WRITE_BACK_BYTES) this.#startWriteBack();
  }

  /** An fdatasync now, unless one is running (see the invariants); dispose waits for it like any call. */
  #startWriteBack(): void {
    if (this.#writeBack !== undefined || this.#closing || writeBacksRunning >= WRITE_BACKS_AT_ONCE) return;
    this.#unsynced = 0;
    writeBacksRunning++;
    // The OS error itself is kept (never rejects): #throwIfWriteBackFailed says what it means.
    this.#writeBack = this.#run("write back", true, () =>
      callback((cb) => fs.fdatasync(this.#fd, cb)).catch((e) => {
        this.#writeBackError ??= e;
      }))
      .catch(() => {}) // #run refused: the store is closing, nothing was written back
      .finally(() => {
        writeBacksRunning--;
        this.#writeBack = undefined;
      });
  }

  /** Waits for the early write-back running; throws when one failed. */
  async #writtenBack(action: string): Promise<void> {
    await this.#writeBack;
    this.#throwIfWriteBackFailed(action);
  }

  #throwIfWriteBackFailed(action: string): void {
    const e = this.#writeBackError;
    if (e === undefined) return;
    throw storageError(action, this.path, {
      cause: e,
      reason: `writing back what this sync wrote failed earlier (${(e as Error).message}); data written may be lost`,
    });
  }

  punchHole(position: number, length: number): Promise<HoleMethod> {
    return this.#run("punch a hole in", true, async () => {
      const start = Math.max(0, position);
      const end = Math.min(position + length, this.#size);
      if (start >= end) return "punched";
      const range = { offset: start, length: end - start };
      if (this.kind === "block-device") return await this.#zeroDeviceRange(range);
      const libc = this.#libc;
      if (libc && !this.#noPunch) {
        const r = libc.punchHole(this.#fd, range);
        if (r === 0) return "punched";
        if (r !== -EOPNOTSUPP && r !== -ENOSYS) {
          throw storageError("punch a hole in", this.path, { errno: r });
        }
        this.#noPunch = true;
      }
      await this.#writeZeros(range);
      return "zeroed";
    });
  }

  /**
   * Block devices: the 4 KiB-aligned middle goes to fallocate(PUNCH_HOLE) (zeroes guaranteed,
   * unmaps), else BLKZEROOUT (zeroes, may write them); the unaligned edges get written zeros.
   * BLKDISCARD is never used: it does not guarantee that the range reads back as zeros.
   */
  async #zeroDeviceRange(range: ByteRange): Promise<HoleMethod> {
    const end = range.offset + range.length;
    const a = Math.ceil(range.offset / DEVICE_ALIGN) * DEVICE_ALIGN;
    const b = Math.floor(end / DEVICE_ALIGN) * DEVICE_ALIGN;
    const libc = this.#libc;
    if (!libc || this.#noZeroOut || b <= a) {
      await this.#writeZeros(range);
      return "zeroed";
    }
    for (let pos = a; pos < b; pos += DEVICE_ZERO_STEP) {
      const step = { offset: pos, length: Math.min(DEVICE_ZERO_STEP, b - pos) };
      let r = this.#noPunch ? -EOPNOTSUPP : libc.punchHole(this.#fd, step);
      if (DEVICE_ZERO_REFUSED.has(r)) {
        this.#noPunch = true;
        r = libc.blockZeroOut(this.#fd, step);
      }
      if (DEVICE_ZERO_REFUSED.has(r)) {
        this.#noZeroOut = true;
        await this.#writeZeros({ offset: pos, length: end - pos });
        if (a > range.offset) {
          await this.#writeZeros({ offset: range.offset, length: a - range.offset });
        }
        return pos > a ? "punched" : "zeroed";
      }
      if (r < 0) throw storageError("zero a range of", this.path, { errno: r });
      if (pos + DEVICE_ZERO_STEP < b) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    if (a > range.offset) {
      await this.#writeZeros({ offset: range.offset, length: a - range.offset });
    }
    if (end > b) await this.#writeZeros({ offset: b, length: end - b });
    return "punched";
  }

  async #writeZeros({ offset, length }: ByteRange): Promise<void> {
    for (let pos = offset; pos < offset + length; pos += ZEROS.length) {
      const n = Math.min(ZEROS.length, offset + length - pos);
      await this.#writeAll(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n), pos);
    }
  }

  setSize(size: number): Promise<void> {
    return this.#run("resize", true, async () => {
      if (!Number.isSafeInteger(size) || size < 0) {
        throw storageError("resize", this.path, { code: "EINVAL", reason: `bad size ${size}` });
      }
      if (this.kind === "block-device") {
        if (size > this.#size) {
          throw storageError("resize", this.path, {
            code: "ENOSPC",
            message: `${this.path} is a block device of ${this.#size} bytes, ` +
              `smaller than the source (${size} bytes)`,
          });
        }
        return;
      }
      await callback((cb) => fs.ftruncate(this.#fd, size, cb));
      this.#size = size;
    });
  }

  sync(): Promise<void> {
    return this.#run("flush", true, async () => {
      await this.#writtenBack("flush");
      await callback((cb) => fs.fsync(this.#fd, cb));
      // One started meanwhile (a write during the fsync) may have taken the kernel's error report.
      await this.#writtenBack("flush");
    });
  }

  /** In place, committing is setting `metadata` (files only) and making it all durable. */
  async commit(metadata?: FileMetadata): Promise<void> {
    await this.#run("commit", true, async () => {
      // Before the metadata: a file stamped with the source's mtime over lost data would pass a quick check.
      await this.#writtenBack("commit");
      if (this.kind === "file" && !isEmptyMetadata(metadata)) applyMetadata(this.#fd, metadata!, { libc: this.#libc, path: this.path });
      await callback((cb) => fs.fsync(this.#fd, cb));
      await this.#writtenBack("commit");
    });
    this.#committed = true;
  }

  lend<T>(use: (file: LentFile) => Promise<T>): Promise<T> {
    return this.#run("read", false, () => use(this.#lent));
  }

  /** Runs one operation, counted so that dispose waits for it; maps errors to plain words. */
  async #run<T>(action: string, writes: boolean, op: () => Promise<T>): Promise<T> {
    if (this.#closing) {
      throw storageError(action, this.path, { code: "EBADF", reason: "already closed" });
    }
    if (writes && !this.#writable) {
      throw storageError(action, this.path, { code: "EBADF", reason: "opened read-only" });
    }
    this.#inflight++;
    try {
      return await op();
    } catch (e) {
      throw e instanceof StorageError ? e : storageError(action, this.path, { cause: e });
    } finally {
      if (--this.#inflight === 0 && this.#idle) this.#idle();
    }
  }

  /** Unlinks `path` while it still names this store's file (never a file put there since). */
  #removeCreated(path: string): void {
    try {
      const now = fs.lstatSync(path, { bigint: true });
      if (now.dev === this.#lent.dev && now.ino === this.#lent.ino) fs.unlinkSync(path);
    } catch {
      // Gone already, or not ours to remove.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#inflight > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
      try {
        if (this.#createdAt !== undefined && !this.#written && !this.#committed) this.#removeCreated(this.#createdAt);
        fs.closeSync(this.#fd);
      } finally {
        this.#release?.();
      }
    })();
    return this.#closing;
  }
}
