/** Opens the file or block device to read from, by path or from a descriptor already checked. */
import fs from "node:fs";
import { libc as ffiLibc, POSIX_FADV_SEQUENTIAL } from "../platform/libc.ts";
import { blockDeviceSize } from "./block-device-size.ts";
import { FdStorage } from "./fd-storage.ts";
import { openFd, type OpenedFd } from "./open-fd.ts";
import { checkReadable } from "./recover-journal.ts";
import { journalOf } from "./work-files.ts";

export interface OpenSourceOptions {
  /** false forces the portable path (no SEEK_DATA, no ioctl) for this store. */
  readonly ffi?: boolean;
  /** How long to wait for a sync into it that is committing (ms); default 0. */
  readonly lockWaitMs?: number;
  /** Where block devices' journals are (default: the state folder). */
  readonly journalDir?: string;
}

/**
 * Read-only store; errors read "Cannot open <path>: no such file" and so on. A source with a
 * committed journal (a sync into it committing, or interrupted while committing) may be half
 * applied: it is waited for, or refused (recover-journal.ts checkReadable).
 */
export async function openSource(
  path: string,
  options: OpenSourceOptions = {},
): Promise<FdStorage> {
  const opened = openFd(path, { action: "open", flags: fs.constants.O_RDONLY });
  const store = sourceFromFd(opened, { ...options, path });
  try {
    const journal = journalOf(path, { kind: store.kind, rdev: opened.stat.rdev, journalDir: options.journalDir });
    await checkReadable(path, { journalPath: journal.path, waitMs: options.lockWaitMs ?? 0 });
    return store;
  } catch (e) {
    await store[Symbol.asyncDispose]();
    throw e;
  }
}

/**
 * Read-only store over a descriptor its caller opened and checked (the listener's walk under
 * its root). Takes ownership: the descriptor is closed on failure or at dispose. `path` only
 * names the file in messages; it is never opened.
 */
export function sourceFromFd(opened: OpenedFd, options: OpenSourceOptions & { path: string }): FdStorage {
  const libc = options.ffi === false ? null : ffiLibc;
  const { fd, kind, stat } = opened;
  try {
    const size = kind === "file"
      ? Number(stat.size)
      : blockDeviceSize(fd, { libc, rdev: stat.rdev });
    libc?.fadvise(fd, POSIX_FADV_SEQUENTIAL); // advisory: larger readahead; failure is harmless
    return new FdStorage({ path: options.path, kind, fd, stat, size, writable: false, libc });
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
