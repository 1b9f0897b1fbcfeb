/**
 * Reads through a descriptor that a store lent to a scan job (Storage.lend), from a worker
 * thread or the main thread. No file is ever opened by name here.
 *
 * How a thread reaches the descriptor, tried in this order and remembered per lent file:
 * 1. node:fs on the very descriptor: worker threads share the process's descriptor table
 *    on Node (checked once by fstat: same device and inode as the store saw);
 * 2. pread(2) through FFI on the very descriptor: Deno's node:fs in a worker knows only the
 *    descriptors that worker opened (fstat says EBADF), but the OS descriptor is the same;
 * 3. without FFI on Deno: a descriptor of this thread's own for the length of one call,
 *    opened through /proc/self/fd/<fd> (the open file itself, not a name a local user can
 *    swap) and refused unless its device and inode are the lent file's. It is closed before
 *    the call returns: a thread cannot tell when the lending store closes, and a descriptor
 *    kept longer would hold the file (and its filesystem) open after the session.
 *
 * Invariant: the caller runs inside the lending store's `lend`, so `file.fd` is open and
 * names that store's file for the whole call.
 */
import fs from "node:fs";
import { libc } from "../platform/libc.ts";
import type { LentFile } from "./storage.ts";
import { storageError } from "./storage-error.ts";

type Reader = (buf: Uint8Array, position: number) => number;

/** How this thread reads each lent file it has seen: path 1 or 2, or undefined for path 3. */
const readers = new Map<string, Reader | undefined>();
const READERS_MAX = 64;

/** Fills `buf` from `position`; bytes past the end of the file stay as they are. Returns bytes read. */
export function readLent(file: LentFile, buf: Uint8Array, position: number): number {
  const key = `${file.fd}:${file.dev}:${file.ino}`;
  let read = readers.get(key);
  if (!readers.has(key)) {
    read = sharedReader(file) ?? ffiReader(file);
    if (readers.size >= READERS_MAX) readers.delete(readers.keys().next().value!);
    readers.set(key, read);
  }
  if (read) return readFull(read, buf, position);
  const own = openOwn(file);
  try {
    return readFull((b, p) => fs.readSync(own, b, 0, b.length, p), buf, position);
  } finally {
    fs.closeSync(own);
  }
}

function readFull(read: Reader, buf: Uint8Array, position: number): number {
  let done = 0;
  while (done < buf.length) {
    const n = read(done === 0 ? buf : buf.subarray(done), position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function sameFile(stat: fs.BigIntStats, file: LentFile): boolean {
  return stat.dev === file.dev && stat.ino === file.ino;
}

function sharedReader(file: LentFile): Reader | undefined {
  let stat: fs.BigIntStats;
  try {
    stat = fs.fstatSync(file.fd, { bigint: true });
  } catch (e) {
    if ((e as { code?: string }).code === "EBADF") return undefined;
    throw storageError("read", file.path, { cause: e });
  }
  if (!sameFile(stat, file)) {
    throw storageError("read", file.path, { code: "EBADF", reason: "its descriptor names another file" });
  }
  return (buf, position) => fs.readSync(file.fd, buf, 0, buf.length, position);
}

function ffiReader(file: LentFile): Reader | undefined {
  const c = libc;
  if (c === null) return undefined;
  return (buf, position) => {
    const n = c.pread(file.fd, buf, position);
    if (n < 0) throw storageError("read", file.path, { errno: n });
    return n;
  };
}

function openOwn(file: LentFile): number {
  let fd: number;
  try {
    fd = fs.openSync(`/proc/self/fd/${file.fd}`, fs.constants.O_RDONLY);
  } catch (e) {
    throw storageError("read", file.path, { cause: e });
  }
  if (!sameFile(fs.fstatSync(fd, { bigint: true }), file)) {
    fs.closeSync(fd);
    throw storageError("read", file.path, { code: "EBADF", reason: "its descriptor names another file" });
  }
  return fd;
}
