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
import { libc } from "../../src/platform/libc.ts";

const ENXIO = 6;

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

const HASH_CHUNK = 1 << 20;

/**
 * A content hash that holes do not change: SHA-256 over (u64 index ‖ bytes) of every
 * HASH_CHUNK-sized piece that is not all zeros, then u64 size. Two files (or a file and
 * `bytesHash` of a buffer) hash equal exactly when their bytes are equal, however their zeros
 * are stored. Pieces wholly inside holes are not read (SEEK_DATA, where FFI works), so a
 * multi-GiB sparse image costs the reading of its data only.
 */
export function fileHash(file: string): string {
  const h = crypto.createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    // A block device (st_size 0) is read to its end: no holes to skip there.
    const device = fs.fstatSync(fd).isBlockDevice();
    const size = device ? Number.MAX_SAFE_INTEGER : fs.fstatSync(fd).size;
    const buf = new Uint8Array(HASH_CHUNK);
    let end = 0;
    for (let at = 0; at < size;) {
      const data = device ? at : nextData(fd, at, size);
      if (data >= size) break;
      at = data - (data % HASH_CHUNK);
      const n = fs.readSync(fd, buf, 0, Math.min(HASH_CHUNK, size - at), at);
      if (n === 0) break;
      hashPiece(h, at / HASH_CHUNK, buf.subarray(0, n));
      at += n;
      end = at;
    }
    h.update(u64(device ? end : size));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

/** fileHash's hash of `bytes` as a file's contents. */
export function bytesHash(bytes: Uint8Array): string {
  const h = crypto.createHash("sha256");
  for (let at = 0; at < bytes.length; at += HASH_CHUNK) hashPiece(h, at / HASH_CHUNK, bytes.subarray(at, at + HASH_CHUNK));
  h.update(u64(bytes.length));
  return h.digest("hex");
}

function hashPiece(h: crypto.Hash, index: number, piece: Uint8Array): void {
  if (isZero(piece)) return;
  h.update(u64(index));
  h.update(piece);
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** The first data offset ≥ at (size when none); `at` itself where holes cannot be found. */
function nextData(fd: number, at: number, size: number): number {
  if (libc === null) return at;
  const r = libc.seekData(fd, at);
  if (r === -ENXIO) return size;
  return r < 0 ? at : r;
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
  const head = (4 - (buf.byteOffset % 4)) % 4;
  if (buf.length < head + 4) return buf.every((b) => b === 0);
  for (let i = 0; i < head; i++) if (buf[i] !== 0) return false;
  const words = new Uint32Array(buf.buffer, buf.byteOffset + head, (buf.length - head) >> 2);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
  for (let i = head + words.length * 4; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}
