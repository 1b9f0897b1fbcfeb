/**
 * A file's size and change times in ns, from its descriptor: statx through FFI where there is
 * one (Deno's node:fs rounds mtime to ms and ctime to whole seconds), else fstat (Node gives ns).
 */
import fs from "node:fs";
import { libc } from "../platform/libc.ts";

export interface FileStamp {
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
}

export function fileStamp(fd: number): FileStamp {
  const t = libc?.fileTimes(fd);
  if (t !== undefined && typeof t !== "number") return t;
  const s = fs.fstatSync(fd, { bigint: true });
  return { size: s.size, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs };
}
