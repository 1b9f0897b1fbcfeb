/**
 * One writing session's use of the destination's signature cache (spec §5.10), either side:
 * the listener for a push, the client for a pull.
 *
 * 1. `begin`, after the destination is open and locked (its journal recovered) and before
 *    anything changes it: the entry of its path is taken out of the cache folder (so a sync
 *    that fails or crashes from here on leaves no entry), then believed (`hit`) only when
 *    every condition holds: a regular file, times read to the ns, the same device, inode,
 *    size, mtime and ctime as right after the commit that wrote it, the same block size and
 *    hash, the same peer (the one party that chose its key and so knows it), and a full read
 *    no longer ago than `maxAgeMs`.
 * 2. While the session runs, the digests of a range come from the entry (`hit.digests`)
 *    instead of being read; the writer still computes the digests of every block it writes.
 *    Every range's final digests are recorded (`record`) into a new entry under a temporary
 *    name, as the range closes.
 * 3. `committed`, after the destination's commit: the identity is read again (after the
 *    last fsync, rename and metadata change) and the new entry is put in place. A session
 *    disposed without it leaves no entry.
 *
 * Invariant: the session's hash key is the entry's when `hit` is set, and the new entry is
 * written with the key the session used; no key is ever stored that a peer other than
 * `peer` knows.
 */
import { DIGEST_SIZE, type HashAlgorithm } from "../../protocol/constants.ts";
import { type CacheEntry, type CacheWriter, identityOf, preciseTimes, sameIdentity, type SignatureCache } from "../storage/signature-cache.ts";
import type { Storage } from "../storage/storage.ts";
import { equalBytes } from "../util/equal-bytes.ts";

/** How a side keeps its cache: where, and how long digests not read again are believed. */
export interface CachePolicy {
  cache: SignatureCache;
  /** A full read at least this often (ms); 0: the cache is never used (entries are still kept). */
  maxAgeMs: number;
}

/** The default --cache-max-age: a week. */
export const DEFAULT_CACHE_MAX_AGE_MS = 7 * 24 * 3600 * 1000;


export interface CacheBegin {
  /** The resolved path the entry is kept under. */
  path: string;
  /** Push: the client's static public key; pull: the listener's host key. */
  peer: Uint8Array;
  blockSize: number;
  hash: HashAlgorithm;
  /** false: invalidate only (the client said --no-cache, or an older client): no use, no new entry. */
  use: boolean;
}

/**
 * Files smaller than this get no entry (spec §5.10): reading one range costs less than an
 * fsynced entry, and a folder of small files would pay one per file.
 */
export const CACHE_MIN_SIZE = 1024 * 1024;

export class CacheSession implements AsyncDisposable {
  readonly #policy: CachePolicy;
  readonly #o: CacheBegin;
  readonly #store: Storage;
  #entry: CacheEntry | undefined;
  #writer: CacheWriter | undefined;
  /** When the full read of this session began (a session not served from the cache). */
  readonly #started = Date.now();
  /** Why the cache is not used this time (for logs and reports); undefined when it is. */
  missReason: string | undefined;

  private constructor(store: Storage, policy: CachePolicy, o: CacheBegin) {
    this.#store = store;
    this.#policy = policy;
    this.#o = o;
  }

  /** Step 1. Never throws for a cache that cannot be read: the session then reads in full. */
  static async begin(store: Storage, policy: CachePolicy, o: CacheBegin): Promise<CacheSession> {
    const s = new CacheSession(store, policy, o);
    const entry = await policy.cache.take(o.path);
    const why = await s.#refusal(entry);
    if (why === undefined) s.#entry = entry;
    else await entry?.[Symbol.asyncDispose]();
    s.missReason = why;
    return s;
  }

  async #refusal(entry: CacheEntry | undefined): Promise<string | undefined> {
    if (!this.#o.use) return "not asked for";
    if (this.#store.kind !== "file") return "a block device has no trustworthy change stamp";
    if (!preciseTimes) return "file times are not read to the nanosecond here (no FFI)";
    if (!entry) return "no entry";
    const h = entry.header;
    if (h.blockSize !== this.#o.blockSize || h.hash !== this.#o.hash) return "another block size or hash";
    if (!equalBytes(h.peer, this.#o.peer)) return "its key was chosen by another peer";
    if (this.#policy.maxAgeMs <= 0 || Date.now() - h.verifiedAtMs > this.#policy.maxAgeMs) return "older than --cache-max-age";
    if (!sameIdentity(h.identity, await identityOf(this.#store))) return "the file changed since";
    return undefined;
  }

  /** The entry's hash key when the cache answers this session. */
  get key(): Uint8Array | undefined {
    return this.#entry?.header.key;
  }

  /** True while digests come from the cache. */
  get hit(): boolean {
    return this.#entry !== undefined;
  }

  /**
   * The final size is known (push: OPEN's; pull: OPEN_OK's): a size change means a full read
   * (the last block's digest would change with the size). The key stays.
   */
  async checkSize(size: number): Promise<void> {
    if (this.#entry && this.#entry.header.identity.size !== BigInt(size)) {
      await this.#entry[Symbol.asyncDispose]();
      this.#entry = undefined;
      this.missReason = "the size changes";
    }
  }

  /** Digests of [offset, offset + length) from the cache (`hit` only). */
  digests(offset: number, length: number): Promise<Uint8Array> {
    const bs = this.#o.blockSize;
    return this.#entry!.digests(offset / bs, Math.ceil(length / bs));
  }

  /**
   * Starts the new entry (step 2), with the key this session hashes under; none unless `use`
   * and a file whose times can be trusted, of at least CACHE_MIN_SIZE. A cache folder that
   * cannot be written: no entry.
   */
  async startRecording(o: { key: Uint8Array; size: number }): Promise<void> {
    if (!this.#o.use || this.#store.kind !== "file" || !preciseTimes || o.size < CACHE_MIN_SIZE) return;
    try {
      this.#writer = await this.#policy.cache.create(this.#o.path, {
        blockSize: this.#o.blockSize,
        hash: this.#o.hash,
        key: o.key,
        peer: this.#o.peer,
        verifiedAtMs: this.#entry ? this.#entry.header.verifiedAtMs : this.#started,
        blocks: Math.ceil(o.size / this.#o.blockSize),
      });
    } catch {
      this.#writer = undefined;
    }
  }

  /** A range closed with these final digests. */
  record(firstBlock: number, digests: Uint8Array): void {
    if (digests.length % DIGEST_SIZE !== 0) return;
    this.#writer?.put(firstBlock, digests);
  }

  /** Step 3: the new entry in place. Returns why not, if it could not be written (the sync stands). */
  async committed(): Promise<string | undefined> {
    const w = this.#writer;
    if (!w) return undefined;
    this.#writer = undefined;
    try {
      await w.finish(await identityOf(this.#store));
      return undefined;
    } catch (e) {
      await w[Symbol.asyncDispose]();
      return `Cannot keep the signatures of ${this.#o.path}: ${(e as Error).message}`;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#entry?.[Symbol.asyncDispose]();
    this.#entry = undefined;
    await this.#writer?.[Symbol.asyncDispose]();
    this.#writer = undefined;
  }
}
