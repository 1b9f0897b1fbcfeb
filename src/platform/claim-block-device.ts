/**
 * Exclusive claim on a block device: open(2) with O_EXCL and no O_CREAT, which Linux refuses
 * with EBUSY while the device is mounted, used by device-mapper/md, or claimed by another
 * O_EXCL opener (another ssync). The claim lasts until `release` runs.
 *
 * Invariant: the claim is a separate descriptor; I/O uses its own, so either may be closed
 * without affecting the other's open file description.
 */
import fs from "node:fs";
import { ErrnoError } from "../util/errors.ts";
import { errnoName, type Libc, O_EXCL, O_RDONLY } from "./libc.ts";

export interface BlockDeviceClaim {
  /** Closes the claiming descriptor; idempotent. */
  release(): void;
}

// deno-lint-ignore no-explicit-any
const isDeno = typeof (globalThis as any).Deno !== "undefined";

/**
 * Claims `path`, or returns null when this runtime cannot (Deno's node:fs turns O_EXCL into
 * "create new", so Deno needs FFI). Throws an ErrnoError (EBUSY when held elsewhere).
 */
export function claimBlockDevice(
  path: string,
  options: { libc: Libc | null },
): BlockDeviceClaim | null {
  const libc = options.libc;
  if (libc) {
    const fd = libc.open(path, O_RDONLY | O_EXCL);
    if (fd < 0) {
      const code = errnoName(fd);
      throw new ErrnoError(code, `${code}: exclusive open of ${path} failed`);
    }
    let open = true;
    return { release: () => void (open && (open = false, libc.close(fd))) };
  }
  if (isDeno) return null;
  const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_EXCL);
  let open = true;
  return { release: () => void (open && (open = false, fs.closeSync(fd))) };
}
