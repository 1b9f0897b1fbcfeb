// The bench's images, all deterministic from a seed:
// - a layout: segments {offset, length, kind} on a sparse file, the rest holes. Kinds: "text"
//   (dictionary words), "bin" (small-alphabet bytes) — together "compressible", ~2-3x with
//   zstd-1 —, "random", "zero" (written zeros) and "alloc" (fallocate'd, reads as zeros);
// - writeImage / copyImage write a layout's bytes (a copy keeps the layout: written zeros stay
//   written, allocated ranges stay allocated, holes stay holes; cp would change that);
// - changeImage changes 1% of the 64 KiB data blocks the ways a guest does;
// - diffPages compares two images page by page (4 KiB): what really differs;
// - zstdBytes: what per-block zstd-1 leaves of an image's data.
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import zlib from "node:zlib";

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const BLOCK = 64 * KiB;
export const PAGE = 4 * KiB;
const CHUNK = 4 * MiB;

/** Byte shares of the VM-like image's data (issue 9: 40% compressible, 40% random, 20% zeros). */
const SHARES = { text: 0.2, bin: 0.2, random: 0.4, zero: 0.1, alloc: 0.1 };

/** A small seeded PRNG (sfc32); `next()` is a uint32, `float()` in [0, 1), `int(n)` in [0, n). */
export function prng(seed) {
  const h = crypto.createHash("sha256").update(String(seed)).digest();
  let a = h.readUInt32LE(0), b = h.readUInt32LE(4), c = h.readUInt32LE(8), d = h.readUInt32LE(12);
  const next = () => {
    a |= 0, b |= 0, c |= 0, d |= 0;
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) next();
  return { next, float: () => next() / 2 ** 32, int: (n) => Math.floor((next() / 2 ** 32) * n) };
}

/** Fills buf with seeded pseudo-random bytes (AES-128-CTR of zeros: fast, deterministic). */
export function fillRandom(buf, seed) {
  const key = crypto.createHash("sha256").update(`random:${seed}`).digest();
  const c = crypto.createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32));
  const zeros = Buffer.alloc(Math.min(buf.length, MiB));
  for (let at = 0; at < buf.length; at += zeros.length) {
    const n = Math.min(zeros.length, buf.length - at);
    c.update(zeros.subarray(0, n)).copy(buf, at);
  }
  return buf;
}

let vocabulary = null;
/** ~4000 pseudo-words (2-11 letters), the same for every run. */
function words() {
  if (vocabulary) return vocabulary;
  const r = prng("vocabulary");
  const letters = "etaoinshrdlcumwfgypbvkjxqz";
  vocabulary = [];
  for (let i = 0; i < 4000; i++) {
    const len = 2 + r.int(6) + r.int(5);
    let w = "";
    for (let j = 0; j < len; j++) w += letters[Math.floor(letters.length * r.float() ** 2)];
    vocabulary.push(Buffer.from(w + (r.int(12) === 0 ? ".\n" : r.int(8) === 0 ? ", " : " ")));
  }
  return vocabulary;
}

/** Text-like bytes: words drawn with a skew (frequent words more often), seeded. */
function wordsText(buf, seed) {
  const v = words();
  const r = prng(`text:${seed}`);
  let at = 0;
  while (at < buf.length) {
    const w = v[Math.floor(v.length * r.float() ** 3)];
    at += w.copy(buf, at);
  }
  return buf;
}

let textPool = null;
/**
 * Text-like bytes, fast: "sentences" of 512 B to 4 KiB cut at seeded offsets from a 16 MiB pool
 * of words (wordsText is ~60 MB/s; this is memcpy speed, same zstd-1 ratio per block).
 */
function fillText(buf, seed) {
  textPool ??= wordsText(Buffer.allocUnsafe(16 * MiB), "pool");
  const r = prng(`text:${seed}`);
  for (let at = 0; at < buf.length;) {
    const n = Math.min(buf.length - at, 512 + r.int(3584));
    const from = r.int(textPool.length - n);
    at += textPool.copy(buf, at, from, from + n);
  }
  return buf;
}

/** Binary-like bytes: a 16-symbol alphabet, skewed, with runs of small little-endian integers. */
const ALPHABET = Buffer.from([0x00, 0x00, 0x00, 0xff, 0x48, 0x89, 0x8b, 0xe8, 0x01, 0x0f, 0x85, 0x24, 0x10, 0x08, 0xc3, 0x20]);
function fillBin(buf, seed) {
  fillRandom(buf, `bin:${seed}`);
  for (let i = 0; i < buf.length; i++) {
    const x = buf[i];
    buf[i] = (i & 7) < 3 ? ALPHABET[x & 15] : (i & 7) < 6 ? ALPHABET[x >> 4] & 0x1f : ALPHABET[(x * 7) & 15];
  }
  return buf;
}

/** Fills buf with `kind` content; `seed` names the chunk (same seed, same bytes). */
export function fillContent(buf, kind, seed) {
  switch (kind) {
    case "text":
      return fillText(buf, seed);
    case "bin":
      return fillBin(buf, seed);
    case "random":
      return fillRandom(buf, seed);
    default:
      return buf.fill(0);
  }
}

const align = (n, a) => Math.round(n / a) * a;

/**
 * A VM-like layout: `data` bytes in about `extents` extents (4 KiB-aligned, sizes spread
 * log-uniformly from 64 KiB to ~100x the smallest) over `apparent` bytes, kinds by SHARES.
 * `kinds` overrides the shares (e.g. {random: 1}).
 */
export function vmLayout({ apparent, data, extents, seed, shares = SHARES }) {
  const r = prng(`layout:${seed}`);
  const weights = Array.from({ length: extents }, () => Math.exp(r.float() * Math.log(100)));
  const wsum = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.max(BLOCK, align((w / wsum) * data, PAGE)));
  let excess = sizes.reduce((a, b) => a + b, 0) - data;
  for (let i = 0; excess !== 0 && i < 10 * extents; i++) {
    const k = i % extents;
    const step = Math.sign(excess) * Math.min(Math.abs(excess), excess > 0 ? sizes[k] - BLOCK : data);
    sizes[k] -= step;
    excess -= step;
  }
  const holes = apparent - data;
  const gw = Array.from({ length: extents + 1 }, () => 0.2 + r.float());
  const gsum = gw.reduce((a, b) => a + b, 0);
  const gaps = gw.map((w) => align((w / gsum) * holes, PAGE));
  // Kinds: each extent goes to the kind furthest below its byte share so far.
  const order = sizes.map((_, i) => i).sort(() => r.float() - 0.5);
  const have = Object.fromEntries(Object.keys(shares).map((k) => [k, 0]));
  const kinds = [];
  for (const i of order) {
    const kind = Object.keys(shares).sort((x, y) => have[x] / shares[x] - have[y] / shares[y])[0];
    kinds[i] = kind;
    have[kind] += sizes[i];
  }
  const segments = [];
  let at = gaps[0];
  for (let i = 0; i < extents; i++) {
    const length = Math.min(sizes[i], apparent - at);
    if (length <= 0) break;
    segments.push({ offset: at, length, kind: kinds[i] });
    at += length + gaps[i + 1];
  }
  return { size: apparent, segments };
}

function fallocate(file, offset, length, punch = false) {
  const args = [...(punch ? ["-p"] : []), "-o", String(offset), "-l", String(length), file];
  const r = spawnSync("fallocate", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`Cannot fallocate ${args.join(" ")}: ${r.stderr || r.error}`);
}

/** Writes a layout's image (seeded content) to `file`, replacing it. */
export function writeImage(file, layout, seed) {
  fs.rmSync(file, { force: true });
  const fd = fs.openSync(file, "w");
  try {
    fs.ftruncateSync(fd, layout.size);
    const buf = Buffer.allocUnsafe(CHUNK);
    layout.segments.forEach((s, i) => {
      if (s.kind === "alloc") return fallocate(file, s.offset, s.length);
      for (let done = 0; done < s.length; done += CHUNK) {
        const n = Math.min(CHUNK, s.length - done);
        fillContent(buf.subarray(0, n), s.kind, `${seed}:${i}:${done}`);
        fs.writeSync(fd, buf, 0, n, s.offset + done);
      }
    });
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Copies `from` (whose layout is `layout`) to `to`, keeping that layout; fsynced. */
export function copyImage(from, to, layout) {
  fs.rmSync(to, { force: true });
  const src = fs.openSync(from, "r");
  const dst = fs.openSync(to, "w");
  try {
    fs.ftruncateSync(dst, layout.size);
    const buf = Buffer.allocUnsafe(CHUNK);
    for (const s of layout.segments) {
      if (s.kind === "alloc") {
        fallocate(to, s.offset, s.length);
        continue;
      }
      for (let done = 0; done < s.length; done += CHUNK) {
        const n = Math.min(CHUNK, s.length - done);
        fs.readSync(src, buf, 0, n, s.offset + done);
        fs.writeSync(dst, buf, 0, n, s.offset + done);
      }
    }
    fs.fsyncSync(dst);
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
}

/** Kinds of change, as shares of the changed blocks. */
const CHANGES = { block: 0.3, page: 0.4, zeroWritten: 0.1, zeroPunched: 0.1, holeWrite: 0.1 };

/**
 * Changes `fraction` of the 64 KiB data blocks of `file` (layout `layout`) the ways a guest
 * does: whole blocks rewritten with random bytes, one 4 KiB page of a block rewritten, blocks
 * zeroed by writes, blocks punched, and writes into holes (a whole block of text). Blocks are
 * distinct; the first four kinds hit blocks wholly inside non-zero data, the last blocks wholly
 * inside holes. Returns the changes and the new layout's extra ranges (for diffPages).
 */
export function changeImage(file, layout, { fraction, seed }) {
  const r = prng(`change:${seed}`);
  const dataBlocks = new Set();
  const fullData = [];
  for (const s of layout.segments) {
    for (let b = Math.floor(s.offset / BLOCK); b * BLOCK < s.offset + s.length; b++) dataBlocks.add(b);
    if (s.kind === "zero" || s.kind === "alloc") continue;
    for (let b = Math.ceil(s.offset / BLOCK); (b + 1) * BLOCK <= s.offset + s.length; b++) fullData.push(b);
  }
  const holeBlocks = [];
  let prevEnd = 0;
  for (const s of [...layout.segments, { offset: layout.size, length: 0 }]) {
    for (let b = Math.ceil(prevEnd / BLOCK); (b + 1) * BLOCK <= s.offset; b++) holeBlocks.push(b);
    prevEnd = s.offset + s.length;
  }
  const total = Math.max(Object.keys(CHANGES).length, Math.round(dataBlocks.size * fraction));
  const pick = (pool, n) => {
    // Partial Fisher-Yates: n distinct blocks.
    const out = [];
    for (let i = 0; i < n && i < pool.length; i++) {
      const j = i + r.int(pool.length - i);
      [pool[i], pool[j]] = [pool[j], pool[i]];
      out.push(pool[i]);
    }
    return out;
  };
  const counts = Object.fromEntries(Object.entries(CHANGES).map(([k, s]) => [k, Math.max(1, Math.round(total * s))]));
  const inData = pick(fullData, counts.block + counts.page + counts.zeroWritten + counts.zeroPunched);
  const intoHoles = pick(holeBlocks, counts.holeWrite);
  const changes = [];
  let i = 0;
  for (const kind of ["block", "page", "zeroWritten", "zeroPunched"]) {
    for (let n = 0; n < counts[kind] && i < inData.length; n++) changes.push({ kind, block: inData[i++] });
  }
  for (const block of intoHoles) changes.push({ kind: "holeWrite", block });
  const fd = fs.openSync(file, "r+");
  try {
    const buf = Buffer.allocUnsafe(BLOCK);
    changes.forEach((c, k) => {
      const at = c.block * BLOCK;
      switch (c.kind) {
        case "block":
          fs.writeSync(fd, fillRandom(buf, `${seed}:c${k}`), 0, BLOCK, at);
          break;
        case "page":
          c.page = r.int(BLOCK / PAGE);
          fs.writeSync(fd, fillRandom(buf.subarray(0, PAGE), `${seed}:c${k}`), 0, PAGE, at + c.page * PAGE);
          break;
        case "zeroWritten":
          fs.writeSync(fd, buf.fill(0), 0, BLOCK, at);
          break;
        case "zeroPunched":
          fallocate(file, at, BLOCK, true);
          break;
        case "holeWrite":
          fs.writeSync(fd, fillText(buf, `${seed}:c${k}`), 0, BLOCK, at);
          break;
      }
    });
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  const byKind = Object.fromEntries(Object.keys(CHANGES).map((k) => [k, changes.filter((c) => c.kind === k).length]));
  return { changes, byKind, dataBlocks: dataBlocks.size, extra: changes.map((c) => ({ offset: c.block * BLOCK, length: BLOCK })) };
}

/** Sorted, merged [offset, end) ranges, clipped to size. */
function mergeRanges(ranges, size) {
  const s = ranges.map((x) => [x.offset, Math.min(size, x.offset + x.length)]).sort((a, b) => a[0] - b[0]);
  const out = [];
  for (const [a, b] of s) {
    if (out.length && a <= out.at(-1)[1]) out.at(-1)[1] = Math.max(out.at(-1)[1], b);
    else out.push([a, b]);
  }
  return out;
}

/**
 * Compares `a` and `b` page by page (4 KiB) wherever either may hold data (`ranges`: the old
 * layout's segments and the changed blocks; elsewhere both are holes). Returns the pages that
 * differ, and of those the ones that are non-zero in `b` (only these need DATA: a page that
 * became zero is a ZERO range).
 */
export function diffPages(a, b, ranges, size) {
  const fa = fs.openSync(a, "r");
  const fb = fs.openSync(b, "r");
  const ba = Buffer.allocUnsafe(CHUNK);
  const bb = Buffer.allocUnsafe(CHUNK);
  const zero = Buffer.alloc(PAGE);
  let pages = 0;
  let nonZero = 0;
  let scanned = 0;
  try {
    for (const [start, end] of mergeRanges(ranges, size)) {
      const from = Math.floor(start / PAGE) * PAGE;
      const to = Math.min(size, Math.ceil(end / PAGE) * PAGE);
      for (let at = from; at < to; at += CHUNK) {
        const n = Math.min(CHUNK, to - at);
        fs.readSync(fa, ba, 0, n, at);
        fs.readSync(fb, bb, 0, n, at);
        scanned += n;
        for (let p = 0; p < n; p += PAGE) {
          const e = Math.min(n, p + PAGE);
          if (ba.compare(bb, p, e, p, e) === 0) continue;
          pages++;
          if (bb.compare(zero, 0, e - p, p, e) !== 0) nonZero++;
        }
      }
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
  return { pages, bytes: pages * PAGE, nonZeroBytes: nonZero * PAGE, scanned };
}

/**
 * What zstd-1 leaves of `file`'s data, compressing each 64 KiB block alone (as ssync's DATA
 * does): blocks overlapping a segment are read; all-zero blocks count 0 (a ZERO range), the
 * others min(zstd-1 size, raw size). Also the raw bytes of the non-zero blocks.
 */
export function zstdBytes(file, layout) {
  const blocks = new Set();
  for (const s of layout.segments) {
    if (s.kind === "alloc" || s.kind === "zero") continue;
    for (let b = Math.floor(s.offset / BLOCK); b * BLOCK < s.offset + s.length; b++) blocks.add(b);
  }
  const fd = fs.openSync(file, "r");
  const buf = Buffer.allocUnsafe(BLOCK);
  const zero = Buffer.alloc(BLOCK);
  const params = { params: { [zlib.constants.ZSTD_c_compressionLevel]: 1 } };
  let packed = 0;
  let raw = 0;
  try {
    for (const b of [...blocks].sort((x, y) => x - y)) {
      const n = fs.readSync(fd, buf, 0, Math.min(BLOCK, layout.size - b * BLOCK), b * BLOCK);
      const block = buf.subarray(0, n);
      if (block.equals(zero.subarray(0, n))) continue;
      raw += n;
      packed += Math.min(n, zlib.zstdCompressSync(block, params).length);
    }
  } finally {
    fs.closeSync(fd);
  }
  return { packed, raw };
}

/** Bytes of each kind in a layout. */
export function layoutShares(layout) {
  const by = {};
  for (const s of layout.segments) by[s.kind] = (by[s.kind] ?? 0) + s.length;
  return by;
}
