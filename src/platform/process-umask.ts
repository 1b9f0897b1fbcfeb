/**
 * This process's umask: the permission bits a file it writes must not get, from the kernel at
 * open(O_CREAT) and from storage/file-metadata.ts when a destination takes its source's mode.
 *
 * Invariants:
 * - Read once, at import time (the CLI imports it before any worker or file exists), and never
 *   changed: a umask set later (process.umask(mask)) has no effect here.
 * - Read without changing it: /proc/self/status's "Umask:" line (Linux ≥ 4.7). Only where that
 *   is missing, node:process's umask() without an argument (deprecated, DEP0139: it sets the
 *   umask to 0 and back, a moment in which a file another thread creates gets any mode; at
 *   import time there is no other thread yet).
 * - Neither: 0o077, the strictest mask a writer can keep using (nobody but the owner).
 */
import fs from "node:fs";
import process from "node:process";

const STRICTEST = 0o077;

export const processUmask: number = readUmask();

function readUmask(): number {
  try {
    const m = /^Umask:\s*([0-7]{1,4})$/m.exec(fs.readFileSync("/proc/self/status", "utf8"));
    if (m) return parseInt(m[1], 8) & 0o777;
  } catch {
    // No procfs: the fallback below.
  }
  try {
    const mask = process.umask();
    if (Number.isInteger(mask) && mask >= 0) return mask & 0o777;
  } catch {
    // A runtime without umask(): the strictest.
  }
  return STRICTEST;
}
