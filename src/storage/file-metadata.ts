/**
 * The attributes a destination file takes from its source at commit: permission bits, mtime
 * (to the nanosecond), owner and group. Applied on the store's own descriptor, never by name.
 *
 * Invariants:
 * - A destination's mode is the source's permission bits masked by this process's umask, with
 *   u+rw added (`destinationMode`), for a new file and an existing one alike: the writer's umask
 *   (a service's UMask=0077) bounds what a peer can grant (rsync's rule for new files without
 *   -p); setuid, setgid and sticky are never applied, whoever sent them; and the user who
 *   writes the file can always open it again for the next sync.
 * - The mtime is exact with FFI (futimens); without it, node:fs's futimes takes seconds as a
 *   double (off by up to a few hundred ns for today's dates on Node; Deno keeps milliseconds).
 * - Block devices are never touched: their node's mode and times are not the image's.
 * - Order: owner (chown may clear mode bits), mode, mtime last; the caller fsyncs after.
 */
import fs from "node:fs";
import type { Libc } from "../platform/libc.ts";
import { processUmask } from "../platform/process-umask.ts";
import { fileStamp } from "./file-stamp.ts";
import { storageError } from "./storage-error.ts";

/** What a commit sets; each attribute present is set, the others are left as they are. */
export interface FileMetadata {
  /** The source's permission bits (st_mode & 0o7777); the destination takes destinationMode of them. */
  readonly mode?: number;
  /** ns since the epoch. */
  readonly mtimeNs?: bigint;
  readonly owner?: { readonly uid: number; readonly gid: number };
}

/** The mode a destination gets for a source's `mode`: its rwx bits the umask leaves, plus u+rw. */
export function destinationMode(mode: number): number {
  return (mode & 0o777 & ~processUmask) | 0o600;
}

/** True when `m` sets nothing. */
export function isEmptyMetadata(m: FileMetadata | undefined): boolean {
  return m === undefined || (m.mode === undefined && m.mtimeNs === undefined && m.owner === undefined);
}

/**
 * Sets `m` on the regular file open as `fd` (see the invariants above); `path` names it in
 * errors. What the file has already is not set again: an identical sync changes nothing, not
 * even the file's ctime.
 */
export function applyMetadata(fd: number, m: FileMetadata, o: { libc: Libc | null; path: string }): void {
  const now = fileStamp(fd);
  try {
    const chown = m.owner !== undefined && (m.owner.uid !== now.uid || m.owner.gid !== now.gid);
    if (chown) fs.fchownSync(fd, m.owner!.uid, m.owner!.gid);
    // After a chown, which may clear setuid and setgid: `now.mode` is stale then.
    if (m.mode !== undefined && (chown || destinationMode(m.mode) !== now.mode)) fs.fchmodSync(fd, destinationMode(m.mode));
  } catch (e) {
    throw storageError("set the owner or mode of", o.path, { cause: e });
  }
  if (m.mtimeNs === undefined || m.mtimeNs === now.mtimeNs) return;
  const rc = o.libc?.setMtime(fd, m.mtimeNs);
  if (rc !== undefined && rc < 0) throw storageError("set the modification time of", o.path, { errno: rc });
  if (rc === 0) return;
  try {
    const atime = fs.fstatSync(fd).atime;
    fs.futimesSync(fd, atime, Number(m.mtimeNs) / 1e9);
  } catch (e) {
    throw storageError("set the modification time of", o.path, { cause: e });
  }
}
