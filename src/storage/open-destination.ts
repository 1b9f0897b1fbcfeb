/**
 * Opens the file or block device to write to.
 *
 * 1. Refuse a directory, a missing parent directory, or a missing file unless `create`;
 * 2. open (creating an empty regular file when asked; its size is set later by setSize);
 * 3. lock, writers only: regular files flock(LOCK_EX|LOCK_NB) on the descriptor, block
 *    devices an O_EXCL claim; without FFI a pid lock file (`<path>.ssync-lock`; for block
 *    devices Node uses the O_EXCL claim and Deno a lock file in the temp directory). A dry
 *    run (read-only) takes no lock at all, neither shared nor the lock file, so it never
 *    holds a writer out: if a writer changes the file meanwhile, the dry run reads a mix of
 *    old and new blocks and reports the differences it saw (it writes nothing, so nothing
 *    but its report is affected; "busy" therefore always means a writer holds the file);
 * 4. size: fstat for files, BLKGETSIZE64 / sysfs / probe for block devices.
 *
 * Invariant: a store is returned only once locked; any failure after open closes the
 * descriptor and releases whatever was taken. `destinationFromFd` does steps 3 and 4 for a
 * descriptor opened and checked elsewhere (the listener's walk under its root).
 */
import fs from "node:fs";
import os from "node:os";
import nodePath from "node:path";
import { claimBlockDevice } from "../platform/claim-block-device.ts";
import { type Libc, libc as ffiLibc, LOCK_EX, LOCK_NB } from "../platform/libc.ts";
import { blockDeviceSize, deviceNumber } from "./block-device-size.ts";
import { EmptyStorage } from "./empty-storage.ts";
import { FdStorage } from "./fd-storage.ts";
import { acquireLockFile, lockFilePath } from "./lock-file.ts";
import { openFd, type OpenedFd } from "./open-fd.ts";
import type { Storage, StorageKind } from "./storage.ts";
import { storageError } from "./storage-error.ts";

export interface OpenDestinationOptions {
  /** Create a missing regular file (never a missing parent directory). */
  readonly create: boolean;
  /** Dry run: open read-only, take no lock, create nothing (a missing file reads as empty). */
  readonly readOnly?: boolean;
  /** false forces the portable path (no SEEK_DATA, fallocate, flock, ioctl) for this store. */
  readonly ffi?: boolean;
  /** Permission bits of a created file (before umask); default 0o600, images hold secrets. */
  readonly mode?: number;
}

const EWOULDBLOCK = 11;

// deno-lint-ignore require-await -- async so that every failure is a rejection
export async function openDestination(
  path: string,
  options: OpenDestinationOptions,
): Promise<Storage> {
  const readOnly = options.readOnly === true;
  const C = fs.constants;
  let exists = true;
  try {
    fs.statSync(path);
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOENT") throw storageError("open", path, { cause: e });
    exists = false;
  }
  if (!exists) {
    checkParent(path);
    if (!options.create) throw storageError("open", path, { code: "ENOENT" });
    if (readOnly) return new EmptyStorage(path);
  }
  const flags = readOnly ? C.O_RDONLY : exists ? C.O_RDWR : C.O_RDWR | C.O_CREAT;
  const opened = openFd(path, { action: exists ? "open" : "create", flags, mode: options.mode ?? 0o600 });
  return destinationFromFd(opened, { path, readOnly, ffi: options.ffi });
}

export interface DestinationFromFdOptions {
  /** Names the file in messages and, without flock, where its lock file goes; never opened. */
  readonly path: string;
  /** The descriptor is read-only (a dry run): take no lock, never write. */
  readonly readOnly: boolean;
  readonly ffi?: boolean;
  /** Without flock: the portable lock file to use instead of `<path>.ssync-lock`. */
  readonly lockFile?: string;
  /** Called once when the store is released (after its descriptor is closed and unlocked). */
  readonly onRelease?: () => void;
}

/**
 * Store over a descriptor its caller opened (O_RDWR, or O_RDONLY when `readOnly`) and
 * checked. Takes ownership: on failure the descriptor is closed and `onRelease` runs.
 */
export function destinationFromFd(opened: OpenedFd, options: DestinationFromFdOptions): Storage {
  const libc = options.ffi === false ? null : ffiLibc;
  const { path, readOnly } = options;
  const { fd, kind, stat } = opened;
  let unlock: (() => void) | undefined;
  const release = () => {
    try {
      unlock?.();
    } finally {
      options.onRelease?.();
    }
  };
  try {
    unlock = lock(path, { fd, kind, rdev: stat.rdev, libc, readOnly, lockFile: options.lockFile });
    const size = kind === "file"
      ? Number(stat.size)
      : blockDeviceSize(fd, { libc, rdev: stat.rdev });
    return new FdStorage({ path, kind, fd, stat, size, writable: !readOnly, libc, release });
  } catch (e) {
    fs.closeSync(fd);
    release();
    throw e;
  }
}

function checkParent(path: string): void {
  const parent = nodePath.dirname(nodePath.resolve(path));
  let st: fs.Stats;
  try {
    st = fs.statSync(parent);
  } catch (e) {
    const code = (e as { code?: string }).code ?? "EIO";
    const reason = code === "ENOENT" ? `directory ${parent} does not exist` : undefined;
    throw storageError("create", path, { cause: e, code, reason });
  }
  if (!st.isDirectory()) {
    throw storageError("create", path, { code: "ENOTDIR", reason: `${parent} is not a directory` });
  }
}

function busy(path: string, cause?: unknown, kind?: StorageKind): Error {
  const reason = kind === "block-device"
    ? "another ssync is writing it, or it is mounted or in use"
    : "another ssync is writing it";
  return storageError("lock", path, { cause, code: "EBUSY", reason });
}

/**
 * Takes the writer lock; returns its release function. A read-only store (a dry run) takes
 * none (see step 3 above). Writers to block devices also hold the O_EXCL claim, which keeps
 * out mounts and other exclusive openers that do not know about flock.
 */
function lock(
  path: string,
  o: { fd: number; kind: StorageKind; rdev: bigint; libc: Libc | null; readOnly: boolean; lockFile?: string },
): () => void {
  if (o.readOnly) return () => {};
  const { libc } = o;
  let claim: { release(): void } | null = null;
  if (o.kind === "block-device") {
    try {
      claim = claimBlockDevice(path, { libc });
    } catch (e) {
      if ((e as { code?: string }).code === "EBUSY") throw busy(path, e, o.kind);
      throw storageError("lock", path, { cause: e });
    }
  }
  try {
    if (libc) {
      const r = libc.flock(o.fd, LOCK_EX | LOCK_NB);
      if (r === -EWOULDBLOCK) throw busy(path, undefined, o.kind);
      if (r < 0) throw storageError("lock", path, { errno: r });
      return () => claim?.release(); // the flock goes with close(2)
    }
    if (claim) return () => claim.release();
    const lockPath = o.kind === "block-device"
      ? lockFilePath(nodePath.join(os.tmpdir(), `ssync-blockdev-${deviceNumber(o.rdev)}`))
      : o.lockFile ?? lockFilePath(path);
    return lockFile(lockPath, path);
  } catch (e) {
    claim?.release();
    throw e;
  }
}

function lockFile(lockPath: string, path: string): () => void {
  try {
    return acquireLockFile(lockPath);
  } catch (e) {
    if ((e as { code?: string }).code === "EBUSY") throw busy(path, e);
    throw storageError("lock", path, { cause: e });
  }
}
