/**
 * The client's side of one session. Push: the client is the source and drives
 * SIGS → DATA/ZERO → RANGE_DONE per range. Pull: the client is the destination and drives
 * READ_DIFF per range, applying the DATA/ZERO replies. Then COMMIT.
 *
 * 1. OPEN (with a fresh random hash key) → OPEN_OK.
 * 2. Plan ranges along the client's own data extents; up to RANGES_IN_FLIGHT at once
 *    (LOCAL_RANGES_IN_FLIGHT when the server runs in this process).
 * 3. Per range, both sides read and hash at the same time (the server for its half, the
 *    client for its own), and only differing blocks cross.
 * 4. FLUSH (push), COMMIT with the root hash; success only after COMMIT_OK with a matching root.
 *    A pull commits its own destination (Storage.commit) only then.
 *
 * A push source that is a regular file is stamped (SourceWatch) before OPEN, after each range
 * is read and right before COMMIT: a change fails the sync before COMMIT (SourceChangedError),
 * so the destination never commits a mix. A pull's source is the listener's: it answers ERROR
 * ESTALE, which the client reports as the same SourceChangedError.
 *
 * One TaskGroup per session: the first error, wherever it arises (a task, a local write, the
 * receive loop, an ERROR reply), aborts the group and fails the connection at once, and is
 * the one reported. Every promise is observed from the moment it exists.
 */
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { ProtocolError } from "../../protocol/codec.ts";
import { DIGEST_SIZE, HASH_KEY_SIZE, HEADER_SIZE, type HashAlgorithm, PROTOCOL_VERSION, SUB_BLOCK_SIZE } from "../../protocol/constants.ts";
import type { FileAttributes, OpenMessage, OpenOkMessage, ServerCounters } from "../../protocol/messages.ts";
import { type CompressMode, CompressPolicy } from "../engine/compress-policy.ts";
import { DestinationWriter, digestRange } from "../engine/destination-side.ts";
import { planRanges } from "../engine/ranges.ts";
import { RootHash } from "../engine/root-hash.ts";
import { ReadAhead } from "../engine/read-ahead.ts";
import { type SideContext, SideStats } from "../engine/side-context.ts";
import { diffRange, type DiffOptions } from "../engine/source-side.ts";
import type { SharedSource } from "./fan-out-source.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import type { Storage, StorageKind } from "../storage/storage.ts";
import { ByteWindow } from "../util/byte-window.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { asError, ErrnoError, IncompleteSyncError, MismatchError, RemoteError, SourceChangedError } from "../util/errors.ts";
import { TaskGroup } from "../util/task-group.ts";
import { type Activity, ClientConnection } from "./client-connection.ts";
import { DATA_WINDOW_BYTES, LOCAL_RANGES_IN_FLIGHT, LOOKAHEAD_JOBS, RANGES_IN_FLIGHT } from "./session-limits.ts";
import { StreamRefines } from "./refine-pull.ts";
import { startRefine } from "./refine-push.ts";
import { RefinePolicy } from "../engine/refine-policy.ts";
import { countReceivedPatch, opMessage, patchHoldBytes, writeOpOf } from "./refine-wire.ts";
import type { SessionProgress } from "./session-progress.ts";
import {
  attributesOf,
  BLOCK_DEVICE_METADATA_NOTE,
  compareAttributes,
  currentAttributes,
  EXPORT_METADATA_NOTE,
  type MetadataReport,
  type MetadataWanted,
  restrict,
  wantsAny,
} from "./file-attributes.ts";
import { checkShrink } from "./shrink-check.ts";
import { type CachePolicy, CacheSession } from "./cache-session.ts";
import { SourceWatch } from "./source-watch.ts";
import { TestPause } from "./test-pause.ts";
import type { WireCounters } from "./wire-counters.ts";

export interface SyncOptions {
  /** Name of the remote file (path under the listener's root, or export). */
  name: string;
  blockSize: number;
  hash: HashAlgorithm;
  dryRun: boolean;
  /** Push: ask the listener to write in place (no journal, no partial file). */
  inplace?: boolean;
  /**
   * zstd for DATA (default "auto": while the sender's link is the bottleneck). Push: the
   * client's own policy; pull: asked of the server (OPEN_CLIENT_ZSTD unless "never",
   * OPEN_COMPRESS_ALWAYS for "always").
   */
  compress?: CompressMode;
  pool: WorkerPool;
  /** The idle timeout's activity (IdleTimeoutChannel): told while the server owes us nothing. */
  activity?: Activity;
  /** Aborts the session (Ctrl-C) through its one abort path, with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Refine differing blocks to 4 KiB pages (OPEN_REFINE, spec §5.8), so only changed pages
   * cross; default true, moot (never asked) with 4 KiB blocks. false: whole blocks.
   */
  refine?: boolean;
  /** Kept up to date for a watcher that polls it (the CLI's progress line): ranges done, counters. */
  progress?: SessionProgress;
  /**
   * The attributes the destination takes from the source (OPEN_METADATA, spec §5.9); absent
   * or none wanted: no flag, the destination's metadata is left alone (and an older listener
   * can be used). `owner` is asked of a push listener, which never grants it; a pull applies
   * it (the caller asks only when running as root).
   */
  metadata?: MetadataWanted;
  /**
   * The destination may become smaller where the part cut off holds data (--allow-shrink):
   * push asks the server (OPEN_ALLOW_SHRINK), pull checks its own destination (shrink-check.ts).
   */
  allowShrink?: boolean;
  /**
   * Push: FLUSH before COMMIT (default true). COMMIT makes the destination durable anyway
   * (spec §5.5); a batch of many small files leaves it out, saving an fsync and a round trip
   * per file.
   */
  flush?: boolean;
  /**
   * Push: offer to take the destination's cached hash key (OPEN_CACHE_KEY, spec §5.10), so that
   * it answers from its signature cache; default true; false (--no-cache): neither offered nor used.
   */
  cacheKey?: boolean;
  /** Pull: this side's own signature cache (spec §5.10); absent: none used, kept or invalidated. */
  cache?: ClientCache;
  /**
   * Push: this session is one destination of a fan-out (fan-out-source.ts): its ranges and the
   * source's read are shared with the other destinations'; it leaves once it ends, either way.
   */
  source?: SharedSource;
}

export interface ClientCache {
  policy: CachePolicy;
  /** The destination's resolved path, which its entry is kept under. */
  path: string;
  /** The listener's host key: the only peer an entry's key is ever sent to. */
  peer: Uint8Array;
  /** Told when an entry could not be written (the sync stands). */
  warn?: (message: string) => void;
  /** false (--no-cache): the entry is only dropped (this sync changes the file), neither used nor kept. */
  use?: boolean;
}

/**
 * The largest server size a pull accepts (1 PiB): a lying or broken server must not make us
 * set a petabyte-sized file and plan ranges over all of it. Free space is deliberately not
 * checked: a sparse destination needs only the source's data, which may be far less than its
 * apparent size (DESIGN.md promise 2); a full disk is a write error, reported as one.
 */
export const MAX_PULL_SIZE = 2 ** 50;

export interface SyncReport {
  mode: "push" | "pull";
  size: number;
  blockSize: number;
  hash: HashAlgorithm;
  dryRun: boolean;
  /** The client's own file's kind (push: the source; pull: the destination). */
  localKind: StorageKind;
  /** The server's file: its kind and size before the sync. */
  remoteKind: StorageKind;
  remoteSizeBefore: number;
  /** The destination's size before the sync (push: the server's; pull: ours; 0 when new). */
  destinationSizeBefore: number;
  /** Counters of the client's own side. */
  local: SideStats;
  /** Counters the server reported in COMMIT_OK. */
  remote: ServerCounters;
  wire: WireCounters;
  root: string;
  seconds: number;
  /** File metadata the destination took; undefined when none was wanted. */
  metadata?: MetadataReport;
  /** The destination answered from its signature cache (spec §5.10): it did not read its file. */
  cacheUsed: boolean;
}

export async function runClient(
  channel: RecordChannel,
  local: Storage,
  options: SyncOptions & { mode: "push" | "pull" },
): Promise<SyncReport> {
  const started = performance.now();
  const group = new TaskGroup({ limit: channel.inProcess ? LOCAL_RANGES_IN_FLIGHT : RANGES_IN_FLIGHT });
  const conn = new ClientConnection(channel, { onFailure: (e) => group.fail(e), activity: options.activity });
  // One abort path: a failed task fails the connection (pending requests, the channel) too.
  group.signal.addEventListener("abort", () => conn.fail(asError(group.signal.reason)), { once: true });
  // A fan-out waits for no session that failed (the others go on without it).
  if (options.source) group.signal.addEventListener("abort", () => options.source!.leave(), { once: true });
  const onAbort = () => group.fail(options.signal!.reason);
  if (options.signal?.aborted) onAbort();
  else options.signal?.addEventListener("abort", onAbort, { once: true });
  let key = new Uint8Array(randomBytes(HASH_KEY_SIZE));
  const stats = new SideStats();
  const compress = options.compress ?? "auto";
  let cache: CacheSession | undefined;
  try {
    // Pull: before anything changes our destination its entry leaves the cache folder (§5.10);
    // a hit's key is the one this listener chose before, sent back in OPEN.
    if (options.mode === "pull" && !options.dryRun && options.cache) {
      const c = options.cache;
      cache = await CacheSession.begin(local, c.policy, { path: c.path, peer: c.peer, blockSize: options.blockSize, hash: options.hash, use: c.use !== false });
      if (cache.key) key = cache.key;
    }
    const offerCacheKey = options.mode === "push" && !options.dryRun && options.cacheKey !== false;
    // Before OPEN, whose size is the store's: a file changed since it was opened fails here.
    const watch = options.mode === "push" ? await SourceWatch.start(local) : undefined;
    const askRefine = options.refine !== false && options.blockSize > SUB_BLOCK_SIZE;
    const wanted = wantsAny(options.metadata) ? options.metadata : undefined;
    const notes: string[] = [];
    // Push: the source's attributes, as stamped; pull: {} asks for the source's. A block device carries none.
    let askMetadata: FileAttributes | undefined;
    if (wanted && local.kind !== "file") notes.push(`${options.mode === "push" ? "the source" : "the destination"} is a block device: ${BLOCK_DEVICE_METADATA_NOTE}`);
    else if (wanted) askMetadata = options.mode === "push" ? attributesOf(watch!.first, wanted) : {};
    const ok = await openRequest(conn, {
      version: PROTOCOL_VERSION,
      mode: options.mode,
      hash: options.hash,
      blockSize: options.blockSize,
      dryRun: options.dryRun,
      clientZstd: compress !== "never", // DestinationWriter decompresses zstd DATA
      inPlace: options.inplace === true,
      ...(askRefine ? { refine: true } : {}),
      ...(options.mode === "pull" && compress === "always" ? { compressAlways: true } : {}),
      ...(options.mode === "push" && options.allowShrink ? { allowShrink: true } : {}),
      ...(offerCacheKey ? { cacheKey: true } : {}),
      size: local.size,
      key,
      name: options.name,
      ...(askMetadata ? { metadata: askMetadata } : {}),
    });
    if ((ok.metadata === undefined) !== (askMetadata === undefined)) {
      throw new ProtocolError(askMetadata ? "OPEN_OK: no CAP_METADATA for OPEN_METADATA" : "OPEN_OK: CAP_METADATA without OPEN_METADATA");
    }
    if (options.mode === "pull" && ok.size > MAX_PULL_SIZE) {
      throw new ErrnoError(
        "EFBIG",
        `Cannot pull ${options.name}: the listener says it is ${ok.size} bytes, more than the ${MAX_PULL_SIZE} bytes (2^50) a pull accepts`,
      );
    }
    if (ok.refine && !askRefine) throw new ProtocolError("OPEN_OK: CAP_REFINE without OPEN_REFINE");
    if (ok.cacheKey && !offerCacheKey) throw new ProtocolError("OPEN_OK: CAP_CACHE_KEY without OPEN_CACHE_KEY");
    if (ok.cacheKey) key = ok.cacheKey;
    const refine = ok.refine === true;
    const size = options.mode === "push" ? local.size : ok.size;
    const destinationSizeBefore = options.mode === "push" ? ok.size : local.size;
    if (options.mode === "pull") await checkShrink(local, { size, allowShrink: options.allowShrink === true, name: local.path, signal: group.signal });
    if (options.mode === "pull" && !options.dryRun && local.size !== size) await local.setSize(size);
    await cache?.checkSize(size);
    await cache?.startRecording({ key, size });
    const ctx: SideContext = {
      pool: options.pool,
      store: local,
      hash: options.hash,
      key,
      blockSize: options.blockSize,
      size,
      stats,
      readAhead: new ReadAhead(local),
      signal: group.signal,
    };
    // Both roles count what differed in `stats` (a pull: as it arrives).
    options.progress?.begin({ total: size, wire: conn.wire, changed: () => stats.bytesSent + stats.bytesZeroed });
    // Push: our link's backlog decides (the memory pair of `ssync sync` has none: raw).
    const policy = new CompressPolicy({ mode: ok.zstd ? compress : "never", backlog: () => channel.sendBacklog?.() ?? 0 });
    const root = options.mode === "push"
      ? await pushRanges(conn, ctx, { group, dryRun: options.dryRun, refine, watch, pause: TestPause.fromEnv(), policy, progress: options.progress, source: options.source })
      : await pullRanges(conn, ctx, { group, dryRun: options.dryRun, refine, progress: options.progress, cache });
    if (options.mode === "push" && !options.dryRun && options.flush !== false) await conn.request<"FLUSH">({ type: "FLUSH" });
    // Every read is done: a source unchanged now is the image the destination received.
    await watch?.check();
    if (options.mode === "pull" && !options.dryRun) await local.sync();
    const mine = root.finish(size, options.blockSize);
    const done = await conn.request<"COMMIT">({ type: "COMMIT", root: mine });
    if (!options.dryRun && !equalBytes(done.root, mine)) {
      throw new MismatchError("root hash mismatch: the destination does not match the source");
    }
    let metadata: MetadataReport | undefined;
    let plan: FileAttributes | undefined;
    if (wanted) {
      const m = await metadataOutcome(local, { mode: options.mode, wanted, asked: askMetadata, ok, notes });
      metadata = m.report;
      plan = m.plan;
    }
    // Pull: the source agreed (COMMIT_OK, same root): only now do the changes reach the file.
    if (options.mode === "pull" && !options.dryRun) {
      await local.commit(plan);
      const why = await cache?.committed();
      if (why) options.cache?.warn?.(why);
    }
    conn.close();
    await conn.done;
    return {
      mode: options.mode,
      size,
      blockSize: options.blockSize,
      hash: options.hash,
      dryRun: options.dryRun,
      localKind: local.kind,
      remoteKind: ok.kind,
      remoteSizeBefore: ok.size,
      destinationSizeBefore,
      local: stats,
      remote: done.counters,
      wire: conn.wire,
      root: Buffer.from(mine).toString("hex"),
      seconds: (performance.now() - started) / 1000,
      ...(metadata ? { metadata } : {}),
      cacheUsed: options.mode === "push" ? ok.cacheKey !== undefined : stats.bytesFromCache > 0 || cache?.hit === true,
    };
  } catch (e) {
    group.fail(e);
    conn.fail(asError(e));
    await group.wait().catch(() => {});
    throw options.mode === "pull" ? remoteSourceChanged(e) : e;
  } finally {
    options.source?.leave();
    await cache?.[Symbol.asyncDispose]();
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * OPEN, answered OPEN_OK. A listener that predates OPEN_METADATA closes the connection on the
 * unknown flag (spec §5.9): with metadata asked, a loss right there says so, and how to go on.
 */
async function openRequest(conn: ClientConnection, open: Omit<OpenMessage, "type" | "cookie">): Promise<OpenOkMessage> {
  try {
    return await conn.request<"OPEN">({ type: "OPEN", ...open });
  } catch (e) {
    if (!(e instanceof IncompleteSyncError) || (open.metadata === undefined && !open.cacheKey)) throw e;
    // A loss right at OPEN is still a loss (a rerun may complete it); the hint covers an older listener.
    if (open.metadata === undefined) {
      throw new IncompleteSyncError(
        `${e.message}; if the listener predates the signature cache (it closes the connection on OPEN_CACHE_KEY), update it or pass --no-cache`,
        { cause: e },
      );
    }
    throw new ErrnoError(
      "EPROTO",
      `Cannot ${open.mode} ${open.name}: the listener closed the connection when asked to open it with file metadata ` +
        `(${e.message}); a listener that predates mode and mtime support does that; update it, or pass --no-times --no-perms${open.cacheKey ? " --no-cache" : ""}`,
      { cause: e },
    );
  }
}

/**
 * After the ranges: what the destination takes (`plan`, pull only: a push listener applies
 * what it granted in OPEN_OK itself) and the report. Push: OPEN_OK named what the listener
 * grants, with the destination's current values; pull: OPEN_OK carried the source's.
 */
async function metadataOutcome(
  local: Storage,
  o: { mode: "push" | "pull"; wanted: MetadataWanted; asked: FileAttributes | undefined; ok: OpenOkMessage; notes: string[] },
): Promise<{ report: MetadataReport; plan: FileAttributes | undefined }> {
  const { notes, ok } = o;
  const server = ok.metadata;
  if (o.asked === undefined || server === undefined) return { report: { applied: [], changed: [], notes }, plan: undefined };
  if (ok.kind !== "file") notes.push(`${o.mode === "push" ? "the destination" : "the source"} is a block device: ${BLOCK_DEVICE_METADATA_NOTE}`);
  if (o.mode === "push") {
    if (o.asked.owner && !server.owner && ok.kind === "file") {
      notes.push("owner and group not applied: a listener never sets them over the network (spec §7)");
    }
    const kept = (o.asked.mode !== undefined && server.mode === undefined) || (o.asked.mtimeNs !== undefined && server.mtimeNs === undefined);
    if (kept && ok.kind === "file") notes.push(EXPORT_METADATA_NOTE);
    return { report: { ...compareAttributes(restrict(o.asked, server), server), notes }, plan: undefined };
  }
  const want: FileAttributes = attributesOf({ mode: 0, mtimeNs: 0n, uid: 0, gid: 0, size: 0n, ctimeNs: 0n }, o.wanted);
  const plan = restrict(server, want);
  return { report: { ...compareAttributes(plan, await currentAttributes(local)), notes }, plan };
}

/** Pull: the listener's ERROR ESTALE (its source changed while it was read) is a SourceChangedError. */
function remoteSourceChanged(e: unknown): unknown {
  return e instanceof RemoteError && e.code === "ESTALE" ? new SourceChangedError(`remote: ${e.message}`, { cause: e }) : e;
}

async function pushRanges(
  conn: ClientConnection,
  ctx: SideContext,
  o: {
    group: TaskGroup;
    dryRun: boolean;
    refine: boolean;
    watch: SourceWatch | undefined;
    pause: TestPause | undefined;
    policy: CompressPolicy;
    progress: SessionProgress | undefined;
    source: SharedSource | undefined;
  },
): Promise<RootHash> {
  const root = new RootHash(ctx.key);
  const window = new ByteWindow(DATA_WINDOW_BYTES);
  const policy = new RefinePolicy();
  const ranges = o.source?.ranges() ?? planRanges(ctx.store, { size: ctx.size, blockSize: ctx.blockSize });
  for await (const range of ranges) {
    await o.group.spawn(async () => {
      await o.pause?.beforeRange(ctx.signal);
      const reply = await conn.request<"SIGS">({ type: "SIGS", offset: range.offset, length: range.length });
      if (reply.offset !== range.offset || reply.length !== range.length || reply.digests.length !== Math.ceil(range.length / ctx.blockSize) * DIGEST_SIZE) {
        throw new ProtocolError(`SIGS_REPLY does not match the range requested at ${range.offset}`);
      }
      const acks: Promise<void>[] = [];
      const diff: DiffOptions = {
        zstdLevel: () => o.policy.level(),
        dryRun: o.dryRun,
        refine: o.refine,
        roundTrips: () => policy.roundTrips(),
        emit: async (op, level) => {
          o.policy.observe();
          if (op.kind === "refine") {
            const refined = await startRefine(conn, ctx, op, { window, dryRun: o.dryRun, zstdLevel: o.policy.level(), policy, sent: (p, l) => o.policy.sentOp(p, l) });
            acks.push(refined.done.catch((e) => o.group.fail(e)));
            return;
          }
          const bytes = HEADER_SIZE + (op.kind === "zero" ? 0 : (op.payload?.length ?? 0) + (op.kind === "patch" ? 2 * op.data.length : 0));
          await window.acquire(bytes, ctx.signal);
          // Past the window: the rate of DATA through here is the rate the destination takes it at.
          o.policy.sentOp(op, level);
          const m = opMessage(op);
          const ack = m.type === "DATA" ? conn.request<"DATA">(m) : m.type === "PATCH" ? conn.request<"PATCH">(m) : conn.request<"ZERO">(m);
          // Observed at once: a failed write at the server fails the session now, not after diffRange.
          acks.push(ack.then(() => window.release(bytes), (e) => {
            window.release(bytes);
            o.group.fail(e);
          }));
          // Acknowledged, the record was sealed long ago: diffRange may release its buffers.
          return { free: ack };
        },
      };
      const src = o.source
        ? await o.source.diff(range, { ...diff, hash: ctx.hash, key: ctx.key, dst: reply.digests, stats: ctx.stats, signal: ctx.signal })
        : await diffRange(ctx, { offset: range.offset, length: range.length, extents: range.extents, dst: reply.digests }, { ...diff, lookahead: LOOKAHEAD_JOBS });
      await o.pause?.afterRange(range, ctx.signal);
      await o.watch?.check();
      root.add(range.offset / ctx.blockSize, src);
      await Promise.all(acks);
      o.group.throwIfFailed();
      await conn.request<"RANGE_DONE">({ type: "RANGE_DONE", offset: range.offset, length: range.length });
      o.progress?.rangeDone(range.length);
    });
  }
  await o.group.wait();
  return root;
}

async function pullRanges(
  conn: ClientConnection,
  ctx: SideContext,
  o: { group: TaskGroup; dryRun: boolean; refine: boolean; progress: SessionProgress | undefined; cache: CacheSession | undefined },
): Promise<RootHash> {
  const cache = o.cache;
  const writer = await DestinationWriter.create(ctx, {
    dryRun: o.dryRun,
    ...(cache ? { onClosed: (first: number, digests: Uint8Array) => cache.record(first, digests) } : {}),
  });
  const window = new ByteWindow(DATA_WINDOW_BYTES);
  for await (const range of planRanges(ctx.store, { size: ctx.size, blockSize: ctx.blockSize })) {
    await o.group.spawn(async () => {
      let digests: Uint8Array;
      if (range.data && cache?.hit) {
        // From the signature cache (§5.10): nothing of our file is read.
        digests = await cache.digests(range.offset, range.length);
        ctx.stats.bytesFromCache += range.length;
      } else if (range.data) {
        digests = await digestRange(ctx, range, { lookahead: LOOKAHEAD_JOBS, punchZeroBlocks: !o.dryRun });
      } else {
        digests = new Uint8Array(Math.ceil(range.length / ctx.blockSize) * DIGEST_SIZE);
        ctx.stats.holeBytesSkipped += range.length;
      }
      writer.open(range.offset, digests.slice());
      // The replies to one READ_DIFF ascend without overlapping: a range costs at most its
      // length, however long a server would go on sending.
      let next = range.offset;
      const refines = new StreamRefines(conn, ctx, { writer, fail: (e) => o.group.fail(e) });
      const done = await conn.stream({ type: "READ_DIFF", offset: range.offset, length: range.length, digests }, async (m) => {
        if (m.offset < range.offset || m.offset + m.length > range.offset + range.length) {
          throw new ProtocolError(`${m.type} [${m.offset}, ${m.offset + m.length}) outside the range requested at ${range.offset}`);
        }
        if (m.offset < next) {
          throw new ProtocolError(`${m.type} [${m.offset}, ${m.offset + m.length}) overlaps or precedes an earlier reply in the range at ${range.offset}`);
        }
        if (m.type === "REFINE" || m.type === "PATCH") {
          if (!o.refine) throw new ProtocolError(`${m.type} without CAP_REFINE`);
        }
        if (m.type === "REFINE") return refines.handle(m); // does not advance `next`: its PATCH follows
        next = m.offset + m.length;
        const bytes = m.type === "PATCH" ? patchHoldBytes(m) : HEADER_SIZE + (m.type === "DATA" ? m.payload?.length ?? 0 : 0);
        if (m.type === "PATCH") countReceivedPatch(ctx.stats, m, ctx.blockSize);
        else countReceived(ctx, m);
        await window.acquire(bytes, ctx.signal);
        let written: Promise<void>;
        try {
          written = writer.write(writeOpOf(m));
        } catch (e) {
          window.release(bytes);
          throw e;
        }
        // A failed write (ENOSPC…) releases its bytes and fails the session at once, with its cause.
        written.then(() => window.release(bytes), (e) => {
          window.release(bytes);
          o.group.fail(e);
        });
      });
      if (done.offset !== range.offset || done.length !== range.length) {
        throw new ProtocolError(`RANGE_DONE [${done.offset}, ${done.offset + done.length}) does not match the range requested at ${range.offset}`);
      }
      await refines.done;
      await writer.close(range.offset);
      o.progress?.rangeDone(range.length);
    });
  }
  await o.group.wait();
  return writer.root;
}


/** Pull: what the source sent, counted as it arrives (the push source counts in diffRange). */
function countReceived(ctx: SideContext, m: { type: "DATA" | "ZERO"; length: number; payload?: Uint8Array }): void {
  const s = ctx.stats;
  if (m.type === "ZERO") {
    s.bytesZeroed += m.length;
    return;
  }
  s.blocksSent += Math.ceil(m.length / ctx.blockSize);
  s.bytesSent += m.length;
  s.dataBytesOnWire += m.payload?.length ?? 0;
}
