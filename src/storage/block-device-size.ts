/**
 * Size of a block device in bytes. fstat reports 0 for devices, so: ioctl(BLKGETSIZE64)
 * with FFI, else sysfs (/sys/dev/block/MAJ:MIN/size, in 512-byte sectors), else a binary
 * search for the last readable byte with pread.
 */
import fs from "node:fs";
import type { Libc } from "../platform/libc.ts";

/** Linux dev_t → "major:minor" (glibc's gnu_dev_major/minor encoding). */
export function deviceNumber(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Device size from sysfs, or null when sysfs does not have it. */
export function blockDeviceSizeFromSysfs(rdev: bigint): number | null {
  try {
    const sectors = fs.readFileSync(`/sys/dev/block/${deviceNumber(rdev)}/size`, "utf8").trim();
    const n = Number(sectors);
    return Number.isSafeInteger(n) && n >= 0 ? n * 512 : null;
  } catch {
    return null;
  }
}

/** Device size by reading single bytes: about 2·log2(size) preads. */
export function blockDeviceSizeByProbe(fd: number): number {
  const byte = new Uint8Array(1);
  const readable = (pos: number) => fs.readSync(fd, byte, 0, 1, pos) === 1;
  if (!readable(0)) return 0;
  let lo = 0; // readable
  let hi = 1 << 20; // grows until unreadable
  while (readable(hi)) {
    lo = hi;
    hi *= 2;
    if (hi > Number.MAX_SAFE_INTEGER / 2) throw new Error("block device size probe ran away");
  }
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (readable(mid)) lo = mid;
    else hi = mid;
  }
  return lo + 1;
}

export function blockDeviceSize(fd: number, options: { libc: Libc | null; rdev: bigint }): number {
  if (options.libc) {
    const size = options.libc.blockDeviceSize(fd);
    if (size >= 0) return size;
  }
  return blockDeviceSizeFromSysfs(options.rdev) ?? blockDeviceSizeByProbe(fd);
}
