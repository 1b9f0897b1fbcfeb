/**
 * Opens a path that must be a regular file or a block device, with errors in plain words.
 *
 * 1. stat first, so a directory, FIFO or character device is refused before open(2) can
 *    block on it or succeed on it;
 * 2. open with the given flags;
 * 3. fstat the descriptor and refuse it when it is no longer what step 1 saw.
 */
import fs from "node:fs";
import type { StorageKind } from "./storage.ts";
import { storageError } from "./storage-error.ts";

export interface OpenedFd {
  readonly fd: number;
  readonly kind: StorageKind;
  readonly stat: fs.BigIntStats;
}

/** Kind of what `stat` describes, or throws the plain-words refusal. */
export function storageKind(
  stat: fs.BigIntStats | fs.Stats,
  options: { action: string; path: string },
): StorageKind {
  if (stat.isFile()) return "file";
  if (stat.isBlockDevice()) return "block-device";
  const { action, path } = options;
  if (stat.isDirectory()) throw storageError(action, path, { code: "EISDIR" });
  throw storageError(action, path, {
    code: "EINVAL",
    reason: "not a regular file or block device",
  });
}

export function openFd(
  path: string,
  options: { action: string; flags: number; mode?: number },
): OpenedFd {
  const { action } = options;
  let before: fs.BigIntStats | undefined;
  try {
    before = fs.statSync(path, { bigint: true });
  } catch (e) {
    if ((e as { code?: string }).code !== "ENOENT" || !(options.flags & fs.constants.O_CREAT)) {
      throw storageError(action, path, { cause: e });
    }
  }
  if (before) storageKind(before, { action, path });
  let fd: number;
  try {
    fd = fs.openSync(path, options.flags, options.mode ?? 0o600);
  } catch (e) {
    throw storageError(action, path, { cause: e });
  }
  try {
    const stat = fs.fstatSync(fd, { bigint: true });
    const kind = storageKind(stat, { action, path });
    if (before && (stat.dev !== before.dev || stat.ino !== before.ino)) {
      throw storageError(action, path, { code: "EAGAIN", reason: "it was replaced while opening" });
    }
    return { fd, kind, stat };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
