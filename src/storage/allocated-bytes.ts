/** Bytes of disk a file occupies (st_blocks × 512), as opposed to its apparent size. */
import fs from "node:fs";

export function allocatedBytes(path: string): number {
  return fs.statSync(path).blocks * 512;
}
