/**
 * Sparse test images in temporary directories.
 *
 * Invariants: everything lives under one `os.tmpdir()` subdirectory per `withTempDir` call,
 * removed afterwards even when the body throws; images are sparse (ftruncate to the
 * apparent size, then data written only where asked).
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface DataChunk {
  readonly offset: number;
  readonly length: number;
  /** A byte value, "random", or by default a pattern derived from offset and seed. */
  readonly fill?: number | "random";
  readonly seed?: number;
}

/** Runs `body` with a fresh temporary directory, then deletes it recursively. */
export async function withTempDir<T>(body: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssync-test-"));
  try {
    return await body(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Deterministic non-zero-heavy bytes: differs with offset and seed, never all zero. */
export function patternBytes(
  length: number,
  options: { offset?: number; seed?: number } = {},
): Uint8Array {
  const out = new Uint8Array(length);
  let x = ((options.offset ?? 0) / 4096 + (options.seed ?? 1) * 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x & 0xff) | 1;
  }
  return out;
}

function chunkBytes(c: DataChunk): Uint8Array {
  if (c.fill === "random") return crypto.randomBytes(c.length);
  if (typeof c.fill === "number") return new Uint8Array(c.length).fill(c.fill);
  return patternBytes(c.length, { offset: c.offset, seed: c.seed });
}

/** Creates (or replaces) a sparse file of apparent size `size` with data only in `chunks`. */
export function makeSparseFile(
  file: string,
  options: { size: number; chunks?: DataChunk[] },
): void {
  const fd = fs.openSync(file, "w");
  try {
    fs.ftruncateSync(fd, options.size);
    for (const c of options.chunks ?? []) {
      const step = 1 << 20;
      for (let pos = 0; pos < c.length; pos += step) {
        const part = chunkBytes({
          ...c,
          offset: c.offset + pos,
          length: Math.min(step, c.length - pos),
        });
        fs.writeSync(fd, part, 0, part.length, c.offset + pos);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** SHA-256 (hex) of the whole file, read in 1 MiB pieces. */
export function fileHash(file: string): string {
  const h = crypto.createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    const buf = new Uint8Array(1 << 20);
    for (let pos = 0;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

/** Bytes actually allocated on disk (st_blocks × 512). */
export function allocatedBytesOf(file: string): number {
  return fs.statSync(file).blocks * 512;
}

/** `length` bytes of `file` at `offset` (short at end of file). */
export function readRange(file: string, options: { offset: number; length: number }): Uint8Array {
  const fd = fs.openSync(file, "r");
  try {
    const buf = new Uint8Array(options.length);
    const n = fs.readSync(fd, buf, 0, buf.length, options.offset);
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

/** True when every byte is zero. */
export function isZero(buf: Uint8Array): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
