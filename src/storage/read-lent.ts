/**
 * Reads through a descriptor that a store lent to a scan job (Storage.lend), from a worker
 * thread or the main thread. No file is ever opened by name here.
 *
 * How a thread reaches a descriptor, tried in this order; the first time node:fs does not
 * know one, the thread goes on with 2 or 3 for every file (they reach any descriptor; on Deno's
 * main thread, node:fs knows those it opened but not those opened through FFI):
 * 1. "shared": node:fs on the very descriptor: worker threads share the process's
 *    descriptor table on Node;
 * 2. "ffi": pread(2) through FFI on the very descriptor: Deno's node:fs in a worker knows only
 *    the descriptors that worker opened (fstat says EBADF), but the OS descriptor is the same;
 * 3. "own": without FFI on Deno, a descriptor of this thread's own for the length of one call,
 *    opened through /proc/self/fd/<fd> (the open file itself, not a name a local user can
 *    swap). It is closed before the call returns: a thread cannot tell when the lending store
 *    closes, and a descriptor kept longer would hold the file (and its filesystem) open after
 *    the session.
 *
 * Invariant: every call checks that the descriptor names the lent file (same device and
 * inode; fstat, statx through FFI, or fstat of the own descriptor) before it reads. A check
 * remembered per descriptor number would trust a number that was closed and reused since.
 * The caller runs inside the lending store's `lend`, so `file.fd` stays open for the call.
 */
import fs from "node:fs";
import { libc } from "../platform/libc.ts";
import type { LentFile } from "./storage.ts";
import { storageError } from "./storage-error.ts";

type Way = "shared" | "ffi" | "own";

/** How this thread reaches lent descriptors: "shared" until node:fs fails to know one. */
let way: Way = "shared";

/** Fills `buf` from `position`; bytes past the end of the file stay as they are. Returns bytes read. */
export function readLent(file: LentFile, buf: Uint8Array, position: number): number {
  if (way === "shared") {
    const stat = fstatShared(file);
    if (stat !== undefined) {
      checkSame(stat, file);
      return readFull((b, p) => fs.readSync(file.fd, b, 0, b.length, p), buf, position);
    }
    way = libc === null ? "own" : "ffi";
  }
  if (way === "ffi") {
    const c = libc!;
    const stat = c.fileTimes(file.fd);
    if (typeof stat === "number") throw storageError("read", file.path, { errno: stat });
    checkSame(stat, file);
    return readFull((b, p) => {
      const n = c.pread(file.fd, b, p);
      if (n < 0) throw storageError("read", file.path, { errno: n });
      return n;
    }, buf, position);
  }
  const own = openOwn(file);
  try {
    return readFull((b, p) => fs.readSync(own, b, 0, b.length, p), buf, position);
  } finally {
    fs.closeSync(own);
  }
}

function readFull(read: (buf: Uint8Array, position: number) => number, buf: Uint8Array, position: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = read(done === 0 ? buf : buf.subarray(done), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function checkSame(stat: { dev: bigint; ino: bigint }, file: LentFile): void {
  if (stat.dev !== file.dev || stat.ino !== file.ino) {
    throw storageError("read", file.path, { code: "EBADF", reason: "its descriptor names another file" });
  }
}

/** fstat through this thread's node:fs; undefined when it does not know the descriptor. */
function fstatShared(file: LentFile): fs.BigIntStats | undefined {
  try {
    return fs.fstatSync(file.fd, { bigint: true });
  } catch (e) {
    if ((e as { code?: string }).code === "EBADF") return undefined;
    throw storageError("read", file.path, { cause: e });
  }
}

function openOwn(file: LentFile): number {
  let fd: number;
  try {
    fd = fs.openSync(`/proc/self/fd/${file.fd}`, fs.constants.O_RDONLY);
  } catch (e) {
    throw storageError("read", file.path, { cause: e });
  }
  try {
    checkSame(fs.fstatSync(fd, { bigint: true }), file);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}
