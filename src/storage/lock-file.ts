/**
 * Portable writer lock, used where flock(2) is not available (no FFI): a file created with
 * O_EXCL that holds the owner's pid. A lock whose pid is no longer alive is stale and taken
 * over. A lock file without a pid yet (being written) counts as held for STARTUP_GRACE_MS.
 *
 * Invariant: `release` removes the lock file only while it still names this process.
 */
import fs from "node:fs";
import process from "node:process";
import { ErrnoError } from "../util/errors.ts";

const STARTUP_GRACE_MS = 10_000;

/** The lock file guarding `path` when flock is unavailable. */
export function lockFilePath(path: string): string {
  return `${path}.ssync-lock`;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/** Whether `lockPath` is held by a live process (a stale or absent lock is not held). */
export function isLockFileHeld(lockPath: string): boolean {
  let text: string;
  let mtimeMs: number;
  try {
    text = fs.readFileSync(lockPath, "utf8");
    mtimeMs = fs.statSync(lockPath).mtimeMs;
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return false;
    throw e;
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isSafeInteger(pid) || pid <= 0) return Date.now() - mtimeMs < STARTUP_GRACE_MS;
  return isAlive(pid);
}

/**
 * Creates `lockPath` holding this pid, taking over a stale one. Throws an Error with code
 * "EBUSY" when a live process holds it, or the fs error (e.g. EACCES, EROFS) otherwise.
 * Returns the release function.
 */
export function acquireLockFile(lockPath: string): () => void {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      fs.writeFileSync(lockPath, `${process.pid}\n`, { flag: "wx", mode: 0o644 });
      return () => {
        try {
          if (fs.readFileSync(lockPath, "utf8").trim() === String(process.pid)) {
            fs.unlinkSync(lockPath);
          }
        } catch {
          // Already gone: nothing to release.
        }
      };
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw e;
    }
    if (isLockFileHeld(lockPath)) break;
    try {
      fs.unlinkSync(lockPath); // stale: its owner died without removing it
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT") throw e;
    }
  }
  throw new ErrnoError("EBUSY", `lock file ${lockPath} is held`);
}
