/**
 * A file's size and change times in ns, permission bits and owner, from its descriptor: statx
 * through FFI where there is one (Deno's node:fs rounds mtime to ms and ctime to whole
 * seconds), else fstat (Node gives ns).
 */
import fs from "node:fs";
import { libc } from "../platform/libc.ts";

export interface FileStamp {
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
  /** st_mode & 0o7777. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

export function fileStamp(fd: number): FileStamp {
  const t = libc?.fileTimes(fd);
  if (t !== undefined && typeof t !== "number") return t;
  const s = fs.fstatSync(fd, { bigint: true });
  return { size: s.size, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs, mode: Number(s.mode) & 0o7777, uid: Number(s.uid), gid: Number(s.gid) };
}
