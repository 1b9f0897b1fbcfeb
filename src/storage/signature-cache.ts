/**
 * The destination's signature cache (spec §5.10): one file per destination path in a private
 * folder, holding the final block digests of its last committed sync and the identity the
 * file had right after that commit.
 *
 * Entry file (`<sha256(path)[0:40]>.sig`), every integer big-endian:
 *   header, `headerLength` bytes (a multiple of 4096): magic "SSYNCSIG", u32 version (1),
 *     u32 headerLength, u64 dev, u64 ino, u64 size, i64 mtime ns, i64 ctime ns, u32 block size,
 *     u8 hash code (protocol HashCode), 32-byte hash key, 32-byte peer key, u64 verifiedAt
 *     (ms since the epoch), u64 blocks, u16 path length, path (UTF-8), zeros;
 *   digests: `blocks` × 16 bytes, block i at headerLength + 16·i (all-zero runs left as holes);
 *   trailer: SHA-256 of everything before it.
 *
 * Invariants:
 * - An entry is written under a temporary name (`<entry>.tmp`, one per entry: a file has one
 *   writer at a time), fsynced, renamed into place and its folder fsynced: a reader sees a
 *   whole entry or none. A crash's temporaries are removed once, at the cache's first write.
 * - An entry never outlives its file on purpose: removing a file through ssync (REMOVE,
 *   --delete) drops its entry (`drop`).
 * - `take` removes the entry from the folder before it returns it (the caller is about to
 *   change the file: a crash from then on leaves no entry that could match). The caller reads
 *   the digests through the descriptor it keeps.
 * - An entry is believed only when its file is ours (owner, mode ≤ 0600, one link), its
 *   lengths and fields check, its path is the one asked for and its SHA-256 matches (checked
 *   by streaming the file, 1 MiB at a time, before any digest is handed out): memory never
 *   depends on the file's size. Anything else is removed and counts as no entry.
 * - The folder is made 0700 and must be a directory we own that nobody else can write.
 */
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import fs from "node:fs";
import { open as openFile, type FileHandle } from "node:fs/promises";
import nodePath from "node:path";
import process from "node:process";
import { DIGEST_SIZE, HASH_KEY_SIZE, HashCode, type HashAlgorithm } from "../../protocol/constants.ts";
import { libc } from "../platform/libc.ts";
import { fileStamp } from "./file-stamp.ts";
import { syncDirectory } from "./journaled-storage.ts";
import type { Storage } from "./storage.ts";

const MAGIC = Buffer.from("SSYNCSIG");
const VERSION = 1;
const ALIGN = 4096;
/** magic, version, headerLength, dev, ino, size, mtime, ctime, block size, hash, key, peer, verifiedAt, blocks, path length. */
const FIXED = 8 + 4 + 4 + 8 * 5 + 4 + 1 + HASH_KEY_SIZE + HASH_KEY_SIZE + 8 + 8 + 2;
const MAX_HEADER = 4 * ALIGN;
const TRAILER = 32;
const CHUNK = 1 << 20;

/** What identifies a file's content without reading it: all fields must match. */
export interface FileIdentity {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
}

export interface EntryHeader {
  readonly identity: FileIdentity;
  readonly blockSize: number;
  readonly hash: HashAlgorithm;
  readonly key: Uint8Array;
  /** The one peer that chose `key` (push: the client's static key; pull: the listener's host key). */
  readonly peer: Uint8Array;
  /** When the digests were last all computed from the file (a full read), ms since the epoch. */
  readonly verifiedAtMs: number;
  readonly blocks: number;
  readonly path: string;
}

/** Deno's node:fs rounds ctime to whole seconds: without statx (FFI) there, no identity is trusted. */
export const preciseTimes: boolean = libc !== null || !("Deno" in globalThis);

/** The identity of the file behind `store` now: its descriptor's device and inode, size and times (ns). */
export function identityOf(store: Storage): Promise<FileIdentity> {
  return store.lend((file) => {
    const s = fileStamp(file.fd);
    return Promise.resolve({ dev: file.dev, ino: file.ino, size: s.size, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs });
  });
}

export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

const hashByCode = new Map<number, HashAlgorithm>(Object.entries(HashCode).map(([k, v]) => [v, k as HashAlgorithm]));

/** A temporary entry older than this is a dead writer's (a day: an entry is written during one sync). */
const SWEEP_AGE_MS = 24 * 3600 * 1000;

export class SignatureCache {
  readonly dir: string;
  /** The crash's temporary entries were removed (once, at the first write). */
  #swept = false;

  constructor(dir: string) {
    this.dir = nodePath.resolve(dir);
  }

  entryPath(path: string): string {
    return nodePath.join(this.dir, `${createHash("sha256").update(path).digest("hex").slice(0, 40)}.sig`);
  }

  /**
   * The entry for `path`, removed from the folder first (see the invariants); undefined when
   * there is none or it does not check (it is removed then too). Never throws for a bad entry.
   */
  async take(path: string): Promise<CacheEntry | undefined> {
    const file = this.entryPath(path);
    let handle: FileHandle;
    try {
      handle = await openFile(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return undefined;
      removeQuietly(file);
      return undefined;
    }
    try {
      removeQuietly(file);
      await syncDirectory(this.dir);
      const header = await readEntry(handle, path);
      if (!header) {
        await handle.close();
        return undefined;
      }
      return new CacheEntry(handle, header);
    } catch {
      await handle.close().catch(() => {});
      return undefined;
    }
  }

  /**
   * Drops the entry for `path` (its file was removed: REMOVE, --delete), so entries never
   * outlive their files. Never throws: a missing entry or folder is nothing to drop.
   */
  drop(path: string): void {
    removeQuietly(this.entryPath(path));
  }

  /** A new entry for `path`, written under a temporary name until `CacheWriter.finish`. */
  async create(path: string, o: Omit<EntryHeader, "identity" | "path">): Promise<CacheWriter> {
    this.#ensureDir();
    const final = this.entryPath(path);
    // One temporary name per entry: a file has one writer at a time (its lock), so one already
    // there is a crash's, and dead. O_EXCL after removing it: never written through a link.
    const tmp = `${final}.tmp`;
    const flags = fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
    let handle: FileHandle;
    try {
      handle = await openFile(tmp, flags, 0o600);
    } catch (e) {
      if ((e as { code?: string }).code !== "EEXIST") throw e;
      removeQuietly(tmp);
      handle = await openFile(tmp, flags, 0o600);
    }
    const headerLength = headerLengthOf(path);
    try {
      await handle.truncate(headerLength + o.blocks * DIGEST_SIZE + TRAILER);
    } catch (e) {
      await handle.close().catch(() => {});
      removeQuietly(tmp);
      throw e;
    }
    return new CacheWriter(handle, { ...o, path, tmp, final, headerLength, dir: this.dir });
  }

  #ensureDir(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(this.dir);
    const uid = process.getuid?.();
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
      throw new Error(`Cannot keep signatures in ${this.dir}: it must be a folder of this user that nobody else can write`);
    }
    if (!this.#swept) {
      this.#swept = true;
      this.#sweep();
    }
  }

  /**
   * Once per cache (the first write): temporary entries left by a crash (`*.sig.tmp`, and the
   * older `*.sig.tmp-<random>`) of paths never written again (create() replaces its own path's
   * at once). Only those untouched for SWEEP_AGE_MS: other processes sharing the folder (pull
   * clients, as root /var/lib/ssync) may be writing theirs right now. Only at the start, so a
   * push never reads the whole folder.
   */
  #sweep(): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return;
    }
    const before = Date.now() - SWEEP_AGE_MS;
    for (const n of names) {
      if (!/\.sig\.tmp(-[0-9a-f]+)?$/.test(n)) continue;
      const at = nodePath.join(this.dir, n);
      try {
        if (fs.lstatSync(at).mtimeMs < before) removeQuietly(at);
      } catch {
        // gone meanwhile
      }
    }
  }
}

/** An entry taken from the folder: its header, and its digests through the descriptor kept. */
export class CacheEntry implements AsyncDisposable {
  readonly header: EntryHeader;
  readonly #handle: FileHandle;
  readonly #headerLength: number;
  #closed = false;

  constructor(handle: FileHandle, header: EntryHeader) {
    this.#handle = handle;
    this.header = header;
    this.#headerLength = headerLengthOf(header.path);
  }

  /** Digests of blocks [first, first + count) (a fresh array the caller owns). */
  async digests(first: number, count: number): Promise<Uint8Array> {
    if (first < 0 || count < 0 || first + count > this.header.blocks) throw new RangeError(`blocks [${first}, ${first + count}) outside the entry's ${this.header.blocks}`);
    const out = new Uint8Array(count * DIGEST_SIZE);
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await this.#handle.read(out, done, out.length - done, this.#headerLength + first * DIGEST_SIZE + done);
      if (bytesRead === 0) throw new Error("the signature cache entry ended early");
      done += bytesRead;
    }
    return out;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#handle.close().catch(() => {});
  }
}

interface WriterInit extends Omit<EntryHeader, "identity"> {
  tmp: string;
  final: string;
  headerLength: number;
  dir: string;
}

/** A new entry being written; `put` digests as ranges close, then `finish` once the sync committed. */
export class CacheWriter implements AsyncDisposable {
  readonly #handle: FileHandle;
  readonly #o: WriterInit;
  #writes: Promise<void>[] = [];
  #failure: unknown;
  #state: "open" | "finished" | "disposed" = "open";

  constructor(handle: FileHandle, o: WriterInit) {
    this.#handle = handle;
    this.#o = o;
  }

  /** Records the final digests of blocks [first, …); an all-zero run is left as a hole. */
  put(first: number, digests: Uint8Array): void {
    if (this.#state !== "open") return;
    if (first + digests.length / DIGEST_SIZE > this.#o.blocks) {
      this.#failure ??= new RangeError(`blocks past the entry's ${this.#o.blocks}`);
      return;
    }
    if (digests.every((b) => b === 0)) return;
    const copy = digests.slice();
    const p = this.#handle.write(copy, 0, copy.length, this.#o.headerLength + first * DIGEST_SIZE).then(() => {}, (e) => {
      this.#failure ??= e;
    });
    this.#writes.push(p);
  }

  /** Header with `identity` (stat after the commit), checksum, fsync, rename, folder fsync. */
  async finish(identity: FileIdentity): Promise<void> {
    if (this.#state !== "open") throw new Error("signature cache entry already finished");
    await Promise.all(this.#writes);
    if (this.#failure) throw this.#failure;
    const o = this.#o;
    const header = encodeHeader({ ...o, identity }, o.headerLength);
    await this.#handle.write(header, 0, header.length, 0);
    const end = o.headerLength + o.blocks * DIGEST_SIZE;
    const sum = await checksum(this.#handle, end);
    await this.#handle.write(sum, 0, TRAILER, end);
    await this.#handle.sync();
    await this.#handle.close();
    this.#state = "finished";
    fs.renameSync(o.tmp, o.final);
    await syncDirectory(o.dir);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#state !== "open") return;
    this.#state = "disposed";
    await Promise.all(this.#writes);
    await this.#handle.close().catch(() => {});
    removeQuietly(this.#o.tmp);
  }
}

function headerLengthOf(path: string): number {
  const n = FIXED + Buffer.byteLength(path);
  if (n > MAX_HEADER) throw new RangeError(`a path of ${Buffer.byteLength(path)} bytes is too long for a signature cache entry`);
  return Math.ceil(n / ALIGN) * ALIGN;
}

function encodeHeader(h: EntryHeader, headerLength: number): Uint8Array {
  const b = Buffer.alloc(headerLength);
  let at = 0;
  MAGIC.copy(b, at);
  at += 8;
  at = b.writeUInt32BE(VERSION, at);
  at = b.writeUInt32BE(headerLength, at);
  at = b.writeBigUInt64BE(h.identity.dev, at);
  at = b.writeBigUInt64BE(h.identity.ino, at);
  at = b.writeBigUInt64BE(h.identity.size, at);
  at = b.writeBigInt64BE(h.identity.mtimeNs, at);
  at = b.writeBigInt64BE(h.identity.ctimeNs, at);
  at = b.writeUInt32BE(h.blockSize, at);
  at = b.writeUInt8(HashCode[h.hash], at);
  b.set(h.key, at);
  at += HASH_KEY_SIZE;
  b.set(h.peer, at);
  at += HASH_KEY_SIZE;
  at = b.writeBigUInt64BE(BigInt(h.verifiedAtMs), at);
  at = b.writeBigUInt64BE(BigInt(h.blocks), at);
  const path = Buffer.from(h.path);
  at = b.writeUInt16BE(path.length, at);
  path.copy(b, at);
  return b;
}

/** The entry's header once everything checks (see the invariants), else undefined. */
async function readEntry(handle: FileHandle, path: string): Promise<EntryHeader | undefined> {
  // Unlinked by `take` already: no link left is ours; another would be someone else's.
  const st = await handle.stat({ bigint: true });
  const uid = process.getuid?.();
  if (!st.isFile() || st.nlink > 1n || (uid !== undefined && st.uid !== BigInt(uid)) || (st.mode & 0o077n) !== 0n) return undefined;
  const head = Buffer.alloc(Math.min(MAX_HEADER, Number(st.size)));
  await handle.read(head, 0, head.length, 0);
  if (head.length < FIXED || !head.subarray(0, 8).equals(MAGIC)) return undefined;
  let at = 8;
  if (head.readUInt32BE(at) !== VERSION) return undefined;
  at += 4;
  const headerLength = head.readUInt32BE(at);
  at += 4;
  if (headerLength !== headerLengthOf(path)) return undefined;
  const identity: FileIdentity = {
    dev: head.readBigUInt64BE(at),
    ino: head.readBigUInt64BE(at + 8),
    size: head.readBigUInt64BE(at + 16),
    mtimeNs: head.readBigInt64BE(at + 24),
    ctimeNs: head.readBigInt64BE(at + 32),
  };
  at += 40;
  const blockSize = head.readUInt32BE(at);
  at += 4;
  const hash = hashByCode.get(head.readUInt8(at));
  at += 1;
  const key = new Uint8Array(head.subarray(at, at + HASH_KEY_SIZE));
  at += HASH_KEY_SIZE;
  const peer = new Uint8Array(head.subarray(at, at + HASH_KEY_SIZE));
  at += HASH_KEY_SIZE;
  const verifiedAtMs = Number(head.readBigUInt64BE(at));
  at += 8;
  const blocks = Number(head.readBigUInt64BE(at));
  at += 8;
  const pathLength = head.readUInt16BE(at);
  at += 2;
  if (hash === undefined || blockSize === 0 || (blockSize & (blockSize - 1)) !== 0) return undefined;
  if (!Number.isSafeInteger(blocks) || blocks !== Math.ceil(Number(identity.size) / blockSize)) return undefined;
  if (head.subarray(at, at + pathLength).toString() !== path || pathLength !== Buffer.byteLength(path)) return undefined;
  const end = headerLength + blocks * DIGEST_SIZE;
  if (st.size !== BigInt(end + TRAILER)) return undefined;
  const sum = await checksum(handle, end);
  const stored = Buffer.alloc(TRAILER);
  await handle.read(stored, 0, TRAILER, end);
  if (!stored.equals(sum)) return undefined;
  return { identity, blockSize, hash, key, peer, verifiedAtMs, blocks, path };
}

/** SHA-256 of the file's first `end` bytes, read CHUNK at a time. */
async function checksum(handle: FileHandle, end: number): Promise<Buffer> {
  const h = createHash("sha256");
  const buf = Buffer.alloc(Math.min(CHUNK, Math.max(1, end)));
  for (let at = 0; at < end;) {
    const want = Math.min(buf.length, end - at);
    const { bytesRead } = await handle.read(buf, 0, want, at);
    if (bytesRead === 0) throw new Error("the signature cache entry ended early");
    h.update(buf.subarray(0, bytesRead));
    at += bytesRead;
  }
  return h.digest();
}

function removeQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // gone already
  }
}
