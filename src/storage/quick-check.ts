/**
 * rsync's quick check for a folder sync: a destination file whose size and mtime (to the ns)
 * are the source's is taken as identical, and neither is read. Only the inodes are looked at
 * (open O_NOFOLLOW|O_NONBLOCK, statx or fstat, close): no data block is read.
 *
 * It is never taken when the destination is not a regular file, when ssync's work files lie
 * beside it (an interrupted or running sync: the full sync completes or refuses it), or when
 * an attribute the sync would set differs (mode, owner): the full sync then fixes them.
 */
import fs from "node:fs";
import { destinationMode } from "./file-metadata.ts";
import { type FileStamp, fileStamp } from "./file-stamp.ts";
import { workFileBeside } from "./work-files.ts";

export interface QuickCheckWanted {
  /** The destination's mode must be destinationMode of the source's (--perms, the default). */
  readonly perms: boolean;
  /** Owner and group must be the source's (--owner, as root). */
  readonly owner: boolean;
}

/** Whether `dst` is the source file `src` by size and mtime (and the attributes wanted). */
export function quickCheckSame(src: string, dst: string, w: QuickCheckWanted): boolean {
  const s = stampOf(src);
  const d = stampOf(dst);
  if (s === undefined || d === undefined) return false;
  if (s.size !== d.size || s.mtimeNs !== d.mtimeNs) return false;
  if (w.perms && destinationMode(s.mode) !== d.mode) return false;
  if (w.owner && (s.uid !== d.uid || s.gid !== d.gid)) return false;
  return !exists(workFileBeside(dst, "journal")) && !exists(workFileBeside(dst, "partial"));
}

function stampOf(path: string): FileStamp | undefined {
  const C = fs.constants;
  let fd: number;
  try {
    fd = fs.openSync(path, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  } catch {
    return undefined; // missing, a link, unreadable: the full sync says why
  }
  try {
    return fs.fstatSync(fd).isFile() ? fileStamp(fd) : undefined;
  } finally {
    fs.closeSync(fd);
  }
}

function exists(path: string): boolean {
  try {
    fs.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
