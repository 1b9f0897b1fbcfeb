/**
 * Which runtime-specific paths are active, for the CLI to report and tests to assert.
 *
 * Invariant: read once at import time; environment variables changed later have no effect
 * (storage functions take `{ ffi: false }` to force the portable path per call).
 */
import { libcStatus } from "./libc.ts";
import { zstdStatus } from "./zstd.ts";

export interface Platform {
  readonly runtime: "deno" | "node";
  /** Runtime version, e.g. "2.9.6" or "26.10.0". */
  readonly version: string;
  /** lseek SEEK_DATA/SEEK_HOLE, fallocate, flock and block-device ioctls through FFI. */
  readonly ffi: boolean;
  /** Why `ffi` is false, in plain words; empty when it is true. */
  readonly ffiReason: string;
  /** zlib.zstd* from the runtime rather than @bokuweb/zstd-wasm. */
  readonly nativeZstd: boolean;
  /** A single binary (Node SEA, deno compile) rather than source run by a runtime. */
  readonly singleBinary: boolean;
}

// deno-lint-ignore no-explicit-any
const Deno = (globalThis as any).Deno;

export const platform: Platform = Object.freeze({
  runtime: Deno ? "deno" : "node",
  version: Deno ? String(Deno.version?.deno) : process.versions.node,
  ffi: libcStatus.libc !== null,
  ffiReason: libcStatus.reason,
  nativeZstd: zstdStatus.native,
  singleBinary: Deno ? Deno.build?.standalone === true : isSea(),
});

function isSea(): boolean {
  try {
    // deno-lint-ignore no-explicit-any
    return (process as any).getBuiltinModule?.("node:sea")?.isSea?.() === true;
  } catch {
    return false;
  }
}
