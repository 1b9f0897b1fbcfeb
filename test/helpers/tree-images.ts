/**
 * The tree of sparse images the folder-sync tests share (local and with a listener): 20 files
 * from 0 bytes to 3 GiB apparent, in subfolders, and how to compare two copies of it.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { allocatedBytesOf, fileHash, makeSparseFile } from "./sparse.ts";

const KiB = 1024;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** One file of a folder summary's --json `files`. */
export interface FileRow {
  path: string;
  outcome: string;
  size: number;
  sourceBytesRead: number;
  destinationBytesRead: number;
  dataBytesSent: number;
  error?: { code: string; exitCode: number };
}

/** The tree: [path, apparent size, data chunks at offsets (1 MiB each unless said)]. */
export const TREE: [string, number, number[]][] = [
  ["empty.img", 0, []],
  ["small.img", 4 * KiB, [0]],
  ["big.img", 3 * GiB, [0, 1 * GiB, 3 * GiB - MiB]],
  ["holes.img", 1 * GiB, []],
  ["a/one.img", 64 * MiB, [0, 32 * MiB]],
  ["a/two.img", 64 * MiB, [8 * MiB]],
  ["a/three.img", 16 * MiB, [0]],
  ["a/b/deep1.img", 256 * MiB, [128 * MiB]],
  ["a/b/deep2.img", 8 * MiB, [0, 4 * MiB]],
  ["a/b/deep3.img", 2 * MiB, [0]],
  ["c/c1.img", 32 * MiB, [16 * MiB]],
  ["c/c2.img", 32 * MiB, [0]],
  ["c/c3.img", 1 * MiB, [0]],
  ["c/c4.img", 5 * MiB, [2 * MiB]],
  ["gone1.img", 4 * MiB, [0]],
  ["c/gone2.img", 4 * MiB, [MiB]],
  ["d/e/f.img", 12 * MiB, [4 * MiB]],
  ["x1.img", 2 * MiB, [MiB]],
  ["x2.img", 128 * KiB, [0]],
  ["x3.img", 7 * MiB, [3 * MiB]],
];

export function makeTree(root: string): void {
  for (const [p, size, offsets] of TREE) {
    fs.mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
    makeSparseFile(path.join(root, p), { size, chunks: offsets.map((offset, i) => ({ offset, length: Math.min(MiB, size - offset), seed: i + p.length })) });
  }
}

export function assertSame(src: string, dst: string, p: string): void {
  const [s, d] = [path.join(src, p), path.join(dst, p)];
  assert.equal(fs.statSync(d).size, fs.statSync(s).size, p);
  assert.equal(fileHash(d), fileHash(s), `${p}: same bytes`);
  assert.ok(allocatedBytesOf(d) <= allocatedBytesOf(s) + 64 * KiB, `${p}: sparse (${allocatedBytesOf(d)} vs ${allocatedBytesOf(s)})`);
}

/** Same-size changes to two files, two new files, two removed: what both directions do. */
export function changeTree(root: string): void {
  const fd = fs.openSync(path.join(root, "big.img"), "r+");
  fs.writeSync(fd, new Uint8Array(4 * KiB).fill(7), 0, 4 * KiB, 2 * GiB);
  fs.closeSync(fd);
  const fd2 = fs.openSync(path.join(root, "a/b/deep2.img"), "r+");
  fs.writeSync(fd2, new Uint8Array(4 * KiB).fill(9), 0, 4 * KiB, 0);
  fs.closeSync(fd2);
  makeSparseFile(path.join(root, "new1.img"), { size: 3 * MiB, chunks: [{ offset: MiB, length: MiB }] });
  makeSparseFile(path.join(root, "a/new2.img"), { size: 9 * MiB, chunks: [{ offset: 0, length: MiB }] });
  fs.rmSync(path.join(root, "gone1.img"));
  fs.rmSync(path.join(root, "c/gone2.img"));
}
