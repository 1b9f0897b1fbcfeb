/**
 * The trivial sequential reference the engine is compared with (DESIGN.md, style 5): no
 * engine code, plain node:fs, one block at a time. The destination first takes the
 * source's size (cut, or extended with zeros; an absent file is empty); then every block
 * whose bytes differ is written from the source, or zeroed when the source block is all zero.
 */
import fs from "node:fs";

export interface ReferenceResult {
  /** The destination's bytes after the sync. */
  readonly bytes: Uint8Array;
  /** Indexes of the differing blocks that hold data in the source: what DATA must carry. */
  readonly written: number[];
  /** Indexes of the differing blocks that are all zero in the source: what ZERO must cover. */
  readonly zeroed: number[];
}

/** Reads buf.length bytes at `position`; past the end of the file, zeros. */
function readBlock(fd: number | undefined, buf: Uint8Array, position: number): Uint8Array {
  buf.fill(0);
  for (let at = 0; fd !== undefined && at < buf.length;) {
    const n = fs.readSync(fd, buf, at, buf.length - at, position + at);
    if (n === 0) break;
    at += n;
  }
  return buf;
}

function allZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What syncing `src` into `dst` (which may be absent) must do, with blocks of `blockSize`. */
export function referenceSync(src: string, dst: string, blockSize: number): ReferenceResult {
  const srcFd = fs.openSync(src, "r");
  const dstFd = fs.existsSync(dst) ? fs.openSync(dst, "r") : undefined;
  try {
    const size = fs.fstatSync(srcFd).size;
    const oldSize = dstFd === undefined ? 0 : fs.fstatSync(dstFd).size;
    const bytes = new Uint8Array(size);
    const written: number[] = [];
    const zeroed: number[] = [];
    for (let i = 0; i * blockSize < size; i++) {
      const start = i * blockSize;
      const length = Math.min(size, start + blockSize) - start;
      const want = readBlock(srcFd, new Uint8Array(length), start);
      // The destination's block after the size change: its old bytes up to its old size, then zeros.
      const before = new Uint8Array(length);
      readBlock(dstFd, before.subarray(0, Math.max(0, Math.min(length, oldSize - start))), start);
      if (same(before, want)) {
        bytes.set(before, start);
      } else if (allZero(want)) {
        zeroed.push(i); // bytes stay zero
      } else {
        written.push(i);
        bytes.set(want, start);
      }
    }
    return { bytes, written, zeroed };
  } finally {
    fs.closeSync(srcFd);
    if (dstFd !== undefined) fs.closeSync(dstFd);
  }
}
