/**
 * Opens the file or block device to write to.
 *
 * 1. Refuse a directory, a missing parent directory, or a missing file unless `create`; never
 *    create one in a kernel filesystem (/dev, /proc, /sys: kernel-filesystem.ts);
 * 2. open: an existing destination as itself; a missing one as its partial file
 *    (`.NAME.ssync-partial` beside it, created or resumed; work-files.ts), or, `inplace`, as
 *    an empty regular file at its name (its size is set later by setSize), removed again if
 *    the run ends without writing to it;
 * 3. lock, writers only: regular files flock(LOCK_EX|LOCK_NB) on the descriptor, block
 *    devices an O_EXCL claim; without FFI a pid lock file (`<path>.ssync-lock`; for block
 *    devices Node uses the O_EXCL claim and Deno a lock file in the temp directory). A lock
 *    held elsewhere is retried every LOCK_POLL_MS for `lockWaitMs` (a session that is ending
 *    lets go soon), then refused "busy". Once locked, the name must still be the file locked
 *    (a writer that held it may have renamed its partial file over the name), else step 2
 *    again. A dry run (read-only) takes no lock at all, so it never holds a writer out: it
 *    reads the old image (a writer's changes are in its journal until commit), but waits for
 *    or refuses a committed journal not yet applied (recover-journal.ts checkReadable);
 * 4. recover: a journal left by an interrupted sync is completed or removed
 *    (recover-journal.ts), and `log` is told;
 * 5. size: fstat for files, BLKGETSIZE64 / sysfs / probe for block devices;
 * 6. wrap: an existing destination in a JournaledStorage (changes reach it only at commit),
 *    a partial file in a PartialStorage (renamed over the name at commit); `inplace` in
 *    neither (writes go straight to the destination: faster, torn if interrupted).
 *
 * Invariant: a store is returned only once locked; any failure after open closes the
 * descriptor and releases whatever was taken. `destinationFromFd` does steps 3 and 5 for a
 * descriptor opened and checked elsewhere (the listener's walk under its root), and
 * `journaledDestination` / `partialDestination` steps 4 and 6.
 */
import fs from "node:fs";
import os from "node:os";
import nodePath from "node:path";
import { claimBlockDevice } from "../platform/claim-block-device.ts";
import { type Libc, libc as ffiLibc, LOCK_EX, LOCK_NB } from "../platform/libc.ts";
import { blockDeviceSize, deviceNumber } from "./block-device-size.ts";
import { EmptyStorage } from "./empty-storage.ts";
import { FdStorage } from "./fd-storage.ts";
import { readJournalHeader } from "./journal-file.ts";
import { JournaledStorage } from "./journaled-storage.ts";
import { refuseNewFileIn } from "./kernel-filesystem.ts";
import { acquireLockFile, lockFilePath } from "./lock-file.ts";
import { openFd, type OpenedFd } from "./open-fd.ts";
import { PartialStorage } from "./partial-storage.ts";
import { checkReadable, recoverJournal } from "./recover-journal.ts";
import type { Storage, StorageKind } from "./storage.ts";
import { storageError } from "./storage-error.ts";
import { foreignWorkFile, journalOf, stateJournalDir, workFileBeside } from "./work-files.ts";

export interface OpenDestinationOptions {
  /** Create a missing regular file (never a missing parent directory). */
  readonly create: boolean;
  /** Dry run: open read-only, take no lock, create nothing (a missing file reads as empty). */
  readonly readOnly?: boolean;
  /** false forces the portable path (no SEEK_DATA, fallocate, flock, ioctl) for this store. */
  readonly ffi?: boolean;
  /** Permission bits of a created file (before umask); default 0o600, images hold secrets. */
  readonly mode?: number;
  /** Write in place: no journal, no partial file (faster; torn if interrupted). */
  readonly inplace?: boolean;
  /** How long to wait for a lock held by another writer (ms); default 0. */
  readonly lockWaitMs?: number;
  /** Block devices' journals go here (default: the state folder, work-files.ts). */
  readonly journalDir?: string;
  /** Told what recovery did with a journal an interrupted sync left. */
  readonly log?: (message: string) => void;
}

const EWOULDBLOCK = 11;
const LOCK_POLL_MS = 50;
/** Step 3's "the name is still the file locked": a few rounds, not a loop a racer could hold. */
const OPEN_ATTEMPTS = 4;

export async function openDestination(
  path: string,
  options: OpenDestinationOptions,
): Promise<Storage> {
  for (let attempt = 1; ; attempt++) {
    const store = await openOnce(path, options);
    if (store) return store;
    if (attempt >= OPEN_ATTEMPTS) {
      throw storageError("open", path, { code: "EAGAIN", reason: "it keeps being replaced while opening; try again" });
    }
  }
}

function exists(path: string): boolean {
  try {
    fs.statSync(path);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOENT") throw storageError("open", path, { cause: e });
    return false;
  }
}

/** One round of steps 1–6; undefined when the name changed under the lock (try again). */
async function openOnce(path: string, options: OpenDestinationOptions): Promise<Storage | undefined> {
  const readOnly = options.readOnly === true;
  const C = fs.constants;
  const common = { ffi: options.ffi, lockWaitMs: options.lockWaitMs };
  if (!exists(path)) {
    checkParent(path);
    if (!options.create) throw storageError("open", path, { code: "ENOENT" });
    if (readOnly) return new EmptyStorage(path);
    if (options.inplace) {
      let opened: OpenedFd;
      try {
        opened = openFd(path, { action: "create", flags: C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, mode: options.mode ?? 0o600 });
      } catch (e) {
        if ((e as { code?: string }).code === "EEXIST") return undefined; // made meanwhile: open it as existing
        throw e;
      }
      // Ours: removed again if the run fails before writing to it (fd-storage.ts).
      const dest = await destinationFromFd(opened, { ...common, path, readOnly: false, createdAt: path });
      if (!sameFile(path, opened.stat)) {
        await dest[Symbol.asyncDispose]();
        return undefined;
      }
      return dest;
    }
    const partialPath = workFileBeside(path, "partial");
    let created = true;
    let opened: OpenedFd;
    try {
      opened = openFd(partialPath, { action: "create", flags: C.O_RDWR | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, mode: options.mode ?? 0o600 });
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw storageError("create", path, { cause: e });
      created = false; // an interrupted sync's: resumed
      opened = openFd(partialPath, { action: "open", flags: C.O_RDWR | C.O_NOFOLLOW });
      const foreign = foreignWorkFile(opened.stat);
      if (foreign) {
        fs.closeSync(opened.fd);
        throw storageError("create", path, { code: "EACCES", reason: `${partialPath} is in the way and is not ssync's (${foreign}); remove it` });
      }
    }
    const dest = await destinationFromFd(opened, { ...common, path, readOnly: false, lockFile: lockFilePath(partialPath) });
    if (!sameFile(partialPath, opened.stat) || exists(path)) {
      if (created && sameFile(partialPath, opened.stat)) fs.rmSync(partialPath); // ours, empty: not left behind
      await dest[Symbol.asyncDispose]();
      return undefined;
    }
    return partialDestination(dest, { stat: opened.stat, partialPath, finalPath: path, created });
  }
  if (readOnly) {
    const opened = openFd(path, { action: "open", flags: C.O_RDONLY });
    const dest = await destinationFromFd(opened, { ...common, path, readOnly: true });
    try {
      const journal = journalOf(path, { kind: opened.kind, rdev: opened.stat.rdev, journalDir: options.journalDir });
      await checkReadable(path, { journalPath: journal.path, waitMs: options.lockWaitMs ?? 0 });
    } catch (e) {
      await dest[Symbol.asyncDispose]();
      throw e;
    }
    return dest;
  }
  const opened = openFd(path, { action: "open", flags: C.O_RDWR });
  const journal = journalOf(path, { kind: opened.kind, rdev: opened.stat.rdev, journalDir: options.journalDir });
  const journalPath = journal.path;
  const dest = await destinationFromFd(opened, { ...common, path, readOnly: false, journalPath });
  if (opened.kind === "file" && !sameFile(path, opened.stat)) {
    await dest[Symbol.asyncDispose]();
    return undefined;
  }
  const journalDir = opened.kind === "file" ? nodePath.dirname(nodePath.resolve(path)) : options.journalDir ?? stateJournalDir();
  return await journaledDestination(dest, {
    stat: opened.stat,
    journalPath,
    journalDir,
    deviceId: journal.deviceId,
    makeJournalDir: opened.kind === "block-device",
    inplace: options.inplace === true,
    ffi: options.ffi,
    log: options.log,
  });
}

function sameFile(path: string, stat: { dev: bigint; ino: bigint }): boolean {
  try {
    const now = fs.lstatSync(path, { bigint: true });
    return now.dev === stat.dev && now.ino === stat.ino;
  } catch {
    return false;
  }
}

/**
 * Steps 4 and 6 for an existing destination, locked: recovers its journal, then wraps it
 * (unless `inplace`). Takes ownership of `dest`: disposed on failure.
 */
export async function journaledDestination(
  dest: FdStorage,
  o: {
    stat: { dev: bigint; ino: bigint };
    journalPath: string;
    journalDir: string;
    deviceId?: string;
    makeJournalDir: boolean;
    inplace: boolean;
    ffi?: boolean;
    log?: (message: string) => void;
  },
): Promise<Storage> {
  try {
    const recovered = await recoverJournal(dest, o);
    if (recovered) o.log?.(recovered.message);
    if (o.inplace) return dest;
    return new JournaledStorage({
      dest,
      stat: o.stat,
      deviceId: o.deviceId,
      journalPath: o.journalPath,
      journalDir: o.journalDir,
      makeJournalDir: o.makeJournalDir,
      libc: o.ffi === false ? null : ffiLibc,
    });
  } catch (e) {
    await dest[Symbol.asyncDispose]();
    throw e;
  }
}

/** Step 6 for a partial file, locked, still named `partialPath`. */
export function partialDestination(
  dest: FdStorage,
  o: { stat: { dev: bigint; ino: bigint }; partialPath: string; finalPath: string; created: boolean; dir?: string },
): Storage {
  return new PartialStorage({ dest, stat: o.stat, partialPath: o.partialPath, finalPath: o.finalPath, created: o.created, dir: o.dir ?? nodePath.dirname(nodePath.resolve(o.partialPath)) });
}

export interface DestinationFromFdOptions {
  /** Names the file in messages and, without flock, where its lock file goes; never opened. */
  readonly path: string;
  /** The descriptor is read-only (a dry run): take no lock, never write. */
  readonly readOnly: boolean;
  readonly ffi?: boolean;
  /** Without flock: the portable lock file to use instead of `<path>.ssync-lock`. */
  readonly lockFile?: string;
  /** How long to wait for a lock held elsewhere (ms); default 0. */
  readonly lockWaitMs?: number;
  /** The journal a holder of the lock may be writing: "busy" then names its pid and start. */
  readonly journalPath?: string;
  /** Called once when the store is released (after its descriptor is closed and unlocked). */
  readonly onRelease?: () => void;
  /** The store created the file in place, named so: see FdStorageInit.createdAt. */
  readonly createdAt?: string;
}

/**
 * Store over a descriptor its caller opened (O_RDWR, or O_RDONLY when `readOnly`) and
 * checked: steps 3 and 5. Takes ownership: on failure the descriptor is closed and
 * `onRelease` runs.
 */
export async function destinationFromFd(opened: OpenedFd, options: DestinationFromFdOptions): Promise<FdStorage> {
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
    const o = { fd, kind, rdev: stat.rdev, libc, readOnly, lockFile: options.lockFile };
    const deadline = Date.now() + (options.lockWaitMs ?? 0);
    for (;;) {
      try {
        unlock = lock(path, o);
        break;
      } catch (e) {
        if ((e as { code?: string }).code !== "EBUSY" || Date.now() >= deadline) {
          if ((e as { code?: string }).code === "EBUSY") throw busy(path, e, kind, options);
          throw e;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
    }
    const size = kind === "file"
      ? Number(stat.size)
      : blockDeviceSize(fd, { libc, rdev: stat.rdev });
    return new FdStorage({ path, kind, fd, stat, size, writable: !readOnly, libc, release, createdAt: options.createdAt });
  } catch (e) {
    fs.closeSync(fd);
    release();
    throw e;
  }
}

/** A missing destination's folder: it exists, is a directory, and is no kernel filesystem (/dev, /proc, /sys). */
function checkParent(path: string): void {
  const parent = nodePath.dirname(nodePath.resolve(path));
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(parent, { bigint: true });
  } catch (e) {
    const code = (e as { code?: string }).code ?? "EIO";
    const reason = code === "ENOENT" ? `directory ${parent} does not exist` : undefined;
    throw storageError("create", path, { cause: e, code, reason });
  }
  if (!st.isDirectory()) {
    throw storageError("create", path, { code: "ENOTDIR", reason: `${parent} is not a directory` });
  }
  refuseNewFileIn(path, st.dev);
}

/** "busy", naming the holder when its journal says who it is, and how long we waited. */
function busy(path: string, cause?: unknown, kind?: StorageKind, o: { lockWaitMs?: number; journalPath?: string } = {}): Error {
  const holder = o.journalPath ? readJournalHeader(o.journalPath) : undefined;
  const who = holder ? `another ssync (pid ${holder.pid}, a sync begun ${holder.created})` : "another ssync";
  const reason = (kind === "block-device" ? `${who} is writing it, or it is mounted or in use` : `${who} is writing it`) +
    (o.lockWaitMs ? `; waited ${Math.round(o.lockWaitMs / 100) / 10} s` : "");
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
