/**
 * The few libc calls ssync needs that neither node:fs nor Deno expose, bound through
 * `Deno.dlopen` under Deno and `node:ffi` under Node ≥ 26.
 *
 * Invariants:
 * - `libc` is null when FFI is unusable (not Linux, no FFI in this runtime, no permission,
 *   or SSYNC_NO_FFI=1 at import time); every caller has a portable fallback.
 * - Calls never throw for OS errors: they return the result, or `-errno`. errno is read
 *   immediately after the failing call, before any other JavaScript can run a syscall.
 * - File descriptors are real OS descriptors (node:fs `openSync` returns one on Node and on
 *   Deno 2); descriptors from `libc.open` are NOT known to node:fs on Deno and must be closed
 *   with `libc.close`.
 * - Offsets and lengths are JavaScript numbers (exact up to 2^53 bytes).
 */

import os from "node:os";

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const AT_EMPTY_PATH = 0x1000;
export const STATX_BASIC_STATS = 0x7ff;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const BLKGETSIZE64 = 0x80081272;
export const BLKDISCARD = 0x1277;
export const BLKZEROOUT = 0x127f;
export const POSIX_FADV_SEQUENTIAL = 2;
export const POSIX_FADV_WILLNEED = 3;
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_EXCL = 0o200;
export const O_CLOEXEC = 0o2000000;

export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

export interface Libc {
  /** lseek(fd, offset, SEEK_DATA): the next data offset ≥ offset, or -errno (-ENXIO: none). */
  seekData(fd: number, offset: number): number;
  /** lseek(fd, offset, SEEK_HOLE): the next hole offset ≥ offset (EOF counts), or -errno. */
  seekHole(fd: number, offset: number): number;
  /** fallocate(fd, PUNCH_HOLE | KEEP_SIZE, offset, length): 0 or -errno. */
  punchHole(fd: number, range: ByteRange): number;
  /** fallocate(fd, KEEP_SIZE, offset, length): allocates without changing contents or size; 0 or -errno. */
  allocate(fd: number, range: ByteRange): number;
  /** flock(2): 0 or -errno (EWOULDBLOCK when LOCK_NB and held elsewhere). */
  flock(fd: number, operation: number): number;
  /** ioctl(fd, BLKGETSIZE64): the device size in bytes, or -errno. */
  blockDeviceSize(fd: number): number;
  /** ioctl(fd, BLKZEROOUT, {offset, length}): zeroes (the device may unmap); 0 or -errno. */
  blockZeroOut(fd: number, range: ByteRange): number;
  /** ioctl(fd, BLKDISCARD, {offset, length}): unmaps; contents afterwards are undefined. */
  blockDiscard(fd: number, range: ByteRange): number;
  /** posix_fadvise(2) over the whole file: 0 or -errno. */
  fadvise(fd: number, advice: number): number;
  /** posix_fadvise(2) over one range (WILLNEED: start reading it now, without waiting): 0 or -errno. */
  fadviseRange(fd: number, range: ByteRange, advice: number): number;
  /** open(2) for descriptors node:fs cannot make (O_EXCL on a block device under Deno). */
  open(path: string, flags: number): number;
  /** close(2) for descriptors from `open` above: 0 or -errno. */
  close(fd: number): number;
  /** pread(2) into buf: the bytes read (0 at end of file), or -errno. For a worker thread of
   *  Deno, whose node:fs does not know the descriptors the main thread opened. */
  pread(fd: number, buf: Uint8Array, position: number): number;
  /**
   * statx(fd, "", AT_EMPTY_PATH): size and mtime/ctime in ns, or -errno. Deno's node:fs gives
   * mtime in ms and ctime in whole seconds; this is what notices a source changing.
   */
  fileTimes(fd: number): FileTimes | number;
  /**
   * futimens(fd, {UTIME_OMIT, mtime}): sets the mtime to the nanosecond, leaves the atime;
   * 0 or -errno. (node:fs's futimes takes seconds as a double: ~240 ns off in 2020.)
   */
  setMtime(fd: number, mtimeNs: bigint): number;
  /**
   * glibc's mallopt(3): 1 when the allocator took the setting, 0 when it refused it. Absent
   * for any other libc (musl's allocator has no such settings) or when the symbol is missing.
   */
  mallopt?: (param: number, value: number) => number;
  /**
   * glibc's malloc_trim(3) with no padding: gives every arena's free memory back to the kernel;
   * 1 when some was, 0 when none. Absent like mallopt.
   */
  mallocTrim?: () => number;
}

/** statx's identity, size, change times (ns), permission bits and owner. */
export interface FileTimes {
  /** st_dev as stat(2) gives it: makedev(stx_dev_major, stx_dev_minor). */
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** st_mode & 0o7777. */
  mode: number;
  uid: number;
  gid: number;
}

/** timespec.tv_nsec meaning "leave this time as it is". */
export const UTIME_OMIT = (1 << 30) - 2;

export interface LibcStatus {
  readonly libc: Libc | null;
  /** Why FFI is off, in plain words; empty when it is on. */
  readonly reason: string;
}

// deno-lint-ignore no-explicit-any
type Any = any;
const Deno: Any = (globalThis as Any).Deno;
/** glibc's name: mallopt and malloc_trim are bound from it only (glibc's own). */
const GLIBC = "libc.so.6";
const LIBC_NAMES = [GLIBC, "libc.musl-x86_64.so.1", "libc.musl-aarch64.so.1", "libc.so"];

function envFlag(name: string): boolean {
  try {
    return (globalThis as Any).process?.env?.[name] === "1";
  } catch {
    return false; // Deno without --allow-env
  }
}

/** The symbols, typed the same way for both runtimes; pointers are byte buffers. */
interface RawSymbols {
  lseek(fd: number, offset: bigint, whence: number): bigint;
  fallocate(fd: number, mode: number, offset: bigint, length: bigint): number;
  flock(fd: number, operation: number): number;
  ioctl(fd: number, request: bigint, arg: Uint8Array): number;
  posix_fadvise(fd: number, offset: bigint, length: bigint, advice: number): number;
  open(path: Uint8Array, flags: number, mode: number): number;
  close(fd: number): number;
  pread(fd: number, buf: Uint8Array, count: bigint, offset: bigint): bigint | number;
  statx(dirfd: number, path: Uint8Array, flags: number, mask: number, buf: Uint8Array): number;
  futimens(fd: number, times: Uint8Array): number;
  errno(): number;
  /** Bound on their own: a libc without them still gives every other call. */
  mallopt?: (param: number, value: number) => number;
  malloc_trim?: (pad: bigint) => number;
}

function denoSymbols(): RawSymbols {
  const defs = {
    lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
    fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
    flock: { parameters: ["i32", "i32"], result: "i32" },
    ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
    posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
    open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
    close: { parameters: ["i32"], result: "i32" },
    pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
    statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
    futimens: { parameters: ["i32", "buffer"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  };
  let lastError: unknown;
  for (const name of LIBC_NAMES) {
    try {
      const s = Deno.dlopen(name, defs).symbols;
      return {
        lseek: s.lseek,
        fallocate: s.fallocate,
        flock: s.flock,
        ioctl: s.ioctl,
        posix_fadvise: s.posix_fadvise,
        open: s.open,
        close: s.close,
        pread: s.pread,
        statx: s.statx,
        futimens: s.futimens,
        errno: () => new Deno.UnsafePointerView(s.__errno_location()).getInt32(0),
        mallopt: name !== GLIBC ? undefined : optional(() => Deno.dlopen(name, { mallopt: { parameters: ["i32", "i32"], result: "i32" } }).symbols.mallopt),
        malloc_trim: name !== GLIBC ? undefined : optional(() => Deno.dlopen(name, { malloc_trim: { parameters: ["usize"], result: "i32" } }).symbols.malloc_trim),
      };
    } catch (e) {
      lastError = e;
      if ((e as Error)?.name === "NotCapable" || (e as Error)?.name === "PermissionDenied") break;
    }
  }
  throw lastError;
}

function nodeSymbols(): RawSymbols {
  const proc: Any = (globalThis as Any).process;
  // node:ffi emits an ExperimentalWarning on load; the CLI reports FFI status itself.
  const emitWarning = proc.emitWarning;
  let ffi: Any;
  try {
    proc.emitWarning = (w: unknown, ...rest: unknown[]) => {
      if (!String((w as Error)?.message ?? w).includes("FFI")) emitWarning.call(proc, w, ...rest);
    };
    ffi = proc.getBuiltinModule?.("node:ffi");
  } finally {
    proc.emitWarning = emitWarning;
  }
  if (!ffi?.dlopen) throw new Error("this Node.js has no node:ffi (Node 26 or later has it)");
  const defs = {
    lseek: { arguments: ["i32", "i64", "i32"], return: "i64" },
    fallocate: { arguments: ["i32", "i32", "i64", "i64"], return: "i32" },
    flock: { arguments: ["i32", "i32"], return: "i32" },
    ioctl: { arguments: ["i32", "u64", "pointer"], return: "i32" },
    posix_fadvise: { arguments: ["i32", "i64", "i64", "i32"], return: "i32" },
    open: { arguments: ["pointer", "i32", "u32"], return: "i32" },
    close: { arguments: ["i32"], return: "i32" },
    pread: { arguments: ["i32", "pointer", "u64", "i64"], return: "i64" },
    statx: { arguments: ["i32", "pointer", "i32", "u32", "pointer"], return: "i32" },
    futimens: { arguments: ["i32", "pointer"], return: "i32" },
    __errno_location: { arguments: [], return: "pointer" },
  };
  let lastError: unknown;
  for (const name of LIBC_NAMES) {
    try {
      const f = ffi.dlopen(name, defs).functions;
      return {
        lseek: f.lseek,
        fallocate: f.fallocate,
        flock: f.flock,
        ioctl: f.ioctl,
        posix_fadvise: f.posix_fadvise,
        open: f.open,
        close: f.close,
        pread: f.pread,
        statx: f.statx,
        futimens: f.futimens,
        errno: () => ffi.getInt32(f.__errno_location(), 0),
        mallopt: name !== GLIBC ? undefined : optional(() => ffi.dlopen(name, { mallopt: { arguments: ["i32", "i32"], return: "i32" } }).functions.mallopt),
        malloc_trim: name !== GLIBC ? undefined : optional(() => ffi.dlopen(name, { malloc_trim: { arguments: ["u64"], return: "i32" } }).functions.malloc_trim),
      };
    } catch (e) {
      lastError = e;
      if ((e as { code?: string })?.code === "ERR_ACCESS_DENIED") break;
    }
  }
  throw lastError;
}

/** A symbol some libcs lack, or undefined: its absence costs only what needs it. */
function optional<T>(bind: () => T): T | undefined {
  try {
    return bind();
  } catch {
    return undefined;
  }
}

/** glibc's makedev: how stat(2) packs a device's major and minor numbers into st_dev. */
function makedev(major: number, minor: number): bigint {
  const hi = BigInt(major >>> 12) << 44n | BigInt(minor >>> 8) << 20n;
  return hi | BigInt((major & 0xfff) << 8 | (minor & 0xff));
}

function bindLibc(raw: RawSymbols): Libc {
  const range = new BigUint64Array(2);
  const rangeBytes = new Uint8Array(range.buffer);
  const u64 = new BigUint64Array(1);
  const u64Bytes = new Uint8Array(u64.buffer);
  const encoder = new TextEncoder();
  const emptyPath = new Uint8Array(1);
  const statxBuf = new Uint8Array(256);
  const statxView = new DataView(statxBuf.buffer);
  const times = new BigInt64Array(4);
  const timesBytes = new Uint8Array(times.buffer);
  const ns = (at: number) => statxView.getBigInt64(at, true) * 1_000_000_000n + BigInt(statxView.getUint32(at + 8, true));
  const rangeIoctl = (fd: number, request: number, { offset, length }: ByteRange) => {
    range[0] = BigInt(offset);
    range[1] = BigInt(length);
    return raw.ioctl(fd, BigInt(request), rangeBytes) < 0 ? -raw.errno() : 0;
  };
  return {
    seekData(fd, offset) {
      const r = raw.lseek(fd, BigInt(offset), SEEK_DATA);
      return r < 0n ? -raw.errno() : Number(r);
    },
    seekHole(fd, offset) {
      const r = raw.lseek(fd, BigInt(offset), SEEK_HOLE);
      return r < 0n ? -raw.errno() : Number(r);
    },
    punchHole(fd, { offset, length }) {
      const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
      return raw.fallocate(fd, mode, BigInt(offset), BigInt(length)) < 0 ? -raw.errno() : 0;
    },
    allocate(fd, { offset, length }) {
      return raw.fallocate(fd, FALLOC_FL_KEEP_SIZE, BigInt(offset), BigInt(length)) < 0 ? -raw.errno() : 0;
    },
    fileTimes(fd) {
      // struct statx: stx_uid at 20, stx_gid at 24, stx_mode at 28 (u16), stx_ino at 32,
      // stx_size at 40, stx_ctime at 96, stx_mtime at 112 ({i64 sec, u32 nsec}),
      // stx_dev_major at 136, stx_dev_minor at 140.
      if (raw.statx(fd, emptyPath, AT_EMPTY_PATH, STATX_BASIC_STATS, statxBuf) < 0) return -raw.errno();
      return {
        dev: makedev(statxView.getUint32(136, true), statxView.getUint32(140, true)),
        ino: statxView.getBigUint64(32, true),
        size: statxView.getBigUint64(40, true),
        mtimeNs: ns(112),
        ctimeNs: ns(96),
        mode: statxView.getUint16(28, true) & 0o7777,
        uid: statxView.getUint32(20, true),
        gid: statxView.getUint32(24, true),
      };
    },
    setMtime(fd, mtimeNs) {
      // struct timespec[2] {i64 sec, i64 nsec}: atime omitted, mtime floored to whole seconds + ns.
      let sec = mtimeNs / 1_000_000_000n;
      if (sec * 1_000_000_000n > mtimeNs) sec -= 1n;
      times[0] = 0n;
      times[1] = BigInt(UTIME_OMIT);
      times[2] = sec;
      times[3] = mtimeNs - sec * 1_000_000_000n;
      return raw.futimens(fd, timesBytes) < 0 ? -raw.errno() : 0;
    },
    flock(fd, operation) {
      return raw.flock(fd, operation) < 0 ? -raw.errno() : 0;
    },
    blockDeviceSize(fd) {
      u64[0] = 0n;
      return raw.ioctl(fd, BigInt(BLKGETSIZE64), u64Bytes) < 0 ? -raw.errno() : Number(u64[0]);
    },
    blockZeroOut(fd, r) {
      return rangeIoctl(fd, BLKZEROOUT, r);
    },
    blockDiscard(fd, r) {
      return rangeIoctl(fd, BLKDISCARD, r);
    },
    fadvise(fd, advice) {
      // posix_fadvise returns the error number itself and leaves errno alone.
      const err = raw.posix_fadvise(fd, 0n, 0n, advice);
      return err === 0 ? 0 : -err;
    },
    fadviseRange(fd, { offset, length }, advice) {
      const err = raw.posix_fadvise(fd, BigInt(offset), BigInt(length), advice);
      return err === 0 ? 0 : -err;
    },
    open(path, flags) {
      const fd = raw.open(encoder.encode(path + "\0"), flags | O_CLOEXEC, 0);
      return fd < 0 ? -raw.errno() : fd;
    },
    close(fd) {
      return raw.close(fd) < 0 ? -raw.errno() : 0;
    },
    pread(fd, buf, position) {
      const n = Number(raw.pread(fd, buf, BigInt(buf.length), BigInt(position)));
      return n < 0 ? -raw.errno() : n;
    },
    ...(raw.mallopt ? { mallopt: raw.mallopt } : {}),
    ...(raw.malloc_trim ? { mallocTrim: () => raw.malloc_trim!(0n) } : {}),
  };
}

function loadLibc(): LibcStatus {
  if (envFlag("SSYNC_NO_FFI")) return { libc: null, reason: "disabled by SSYNC_NO_FFI=1" };
  const os = Deno ? Deno.build?.os : (globalThis as Any).process?.platform;
  if (os !== "linux") return { libc: null, reason: `not supported on ${os}` };
  try {
    const libc = bindLibc(Deno ? denoSymbols() : nodeSymbols());
    // A call that must fail proves the binding and errno reading work (EBADF = 9).
    if (libc.seekData(-1, 0) !== -9) return { libc: null, reason: "errno reading does not work" };
    return { libc, reason: "" };
  } catch (e) {
    const name = (e as Error)?.name;
    if (name === "NotCapable" || name === "PermissionDenied") {
      return { libc: null, reason: "FFI not permitted (run Deno with --allow-ffi)" };
    }
    if ((e as { code?: string })?.code === "ERR_ACCESS_DENIED") {
      return { libc: null, reason: "FFI not permitted (run Node with --allow-ffi)" };
    }
    return { libc: null, reason: `FFI unavailable: ${(e as Error)?.message ?? e}` };
  }
}

/** Read once at import time; pass `{ ffi: false }` to storage functions to force the fallback. */
export const libcStatus: LibcStatus = loadLibc();
export const libc: Libc | null = libcStatus.libc;

const ERRNO_NAMES: Map<number, string> = new Map(
  Object.entries(os.constants.errno as Record<string, number>).map(([k, v]) => [v, k]),
);

/** The errno name for an errno number of either sign, e.g. -2 → "ENOENT". */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}
