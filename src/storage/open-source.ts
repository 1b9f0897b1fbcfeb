/** Opens the file or block device to read from. */
import fs from "node:fs";
import { libc as ffiLibc, POSIX_FADV_SEQUENTIAL } from "../platform/libc.ts";
import { blockDeviceSize } from "./block-device-size.ts";
import { FdStorage } from "./fd-storage.ts";
import { openFd } from "./open-fd.ts";

export interface OpenSourceOptions {
  /** false forces the portable path (no SEEK_DATA, no ioctl) for this store. */
  readonly ffi?: boolean;
}

/** Read-only store; errors read "Cannot open <path>: no such file" and so on. */
// deno-lint-ignore require-await -- async so that every failure is a rejection
export async function openSource(
  path: string,
  options: OpenSourceOptions = {},
): Promise<FdStorage> {
  const libc = options.ffi === false ? null : ffiLibc;
  const { fd, kind, stat } = openFd(path, { action: "open", flags: fs.constants.O_RDONLY });
  try {
    const size = kind === "file"
      ? Number(stat.size)
      : blockDeviceSize(fd, { libc, rdev: stat.rdev });
    libc?.fadvise(fd, POSIX_FADV_SEQUENTIAL); // advisory: larger readahead; failure is harmless
    return new FdStorage({ path, kind, fd, size, writable: false, libc });
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}
