/**
 * `ssync sync SRC DST`: the client (source) and the server (destination) in one process,
 * joined by an in-memory channel, speaking the same protocol as over the network.
 *
 * `signal` aborts the client through its one abort path; the server then sees its channel
 * fail and disposes the destination, and only then does syncLocal settle. An open still
 * waiting for a lock (the destination's, or a source's half-applied commit) is abandoned at
 * once (the store it yields later is disposed).
 */
import type { HashAlgorithm } from "../../protocol/constants.ts";
import type { CompressMode } from "../engine/compress-policy.ts";
import type { WorkerPool } from "../engine/worker-pool.ts";
import { openDestination } from "../storage/open-destination.ts";
import { openSource } from "../storage/open-source.ts";
import type { Storage } from "../storage/storage.ts";
import { abortable } from "../util/abortable.ts";
import { runClient, type SyncReport } from "./client-session.ts";
import type { MetadataWanted } from "./file-attributes.ts";
import { memoryPair } from "./memory-pair.ts";
import { type OpenRequest, serveSession } from "./server-session.ts";
import type { SessionProgress } from "./session-progress.ts";

export interface LocalSyncOptions {
  blockSize: number;
  hash: HashAlgorithm;
  dryRun: boolean;
  pool: WorkerPool;
  /** false forces the portable storage paths (no SEEK_DATA, fallocate, flock). */
  ffi?: boolean;
  /** Write in place: no journal, no partial file (faster; torn if interrupted). */
  inplace?: boolean;
  /**
   * zstd for DATA. "auto" (the default) never compresses here: the pair is memory, never a
   * bottleneck (its sendBacklog is 0), so zstd would only cost CPU. "always" compresses.
   */
  compress?: CompressMode;
  /** How long to wait for a lock held by another writer (ms). */
  lockWaitMs?: number;
  /** Told what recovery did with a journal an interrupted sync left. */
  log?: (message: string) => void;
  /** Aborts the sync (Ctrl-C). */
  signal?: AbortSignal;
  /** Refine differing blocks to 4 KiB pages (default true). */
  refine?: boolean;
  /** The client's live counters, for a watcher that polls them. */
  progress?: SessionProgress;
  /** The attributes the destination takes (owner: asked only when running as root). */
  metadata?: MetadataWanted;
  /** The destination may lose data past the source's size (--allow-shrink). */
  allowShrink?: boolean;
  /**
   * How to open the two files instead of by their names (a folder sync: through descriptors
   * pinned from its roots, never through a link); `src` and `dst` then only name them.
   */
  openSource?: () => Promise<Storage>;
  openDestination?: (req: OpenRequest) => Promise<Storage>;
}

export async function syncLocal(src: string, dst: string, options: LocalSyncOptions): Promise<SyncReport> {
  const opened = options.openSource?.() ?? openSource(src, { ffi: options.ffi, lockWaitMs: options.lockWaitMs });
  const source = await abortable(opened, options.signal, {
    discard: (late) => late[Symbol.asyncDispose](),
  });
  try {
    const [clientEnd, serverEnd] = memoryPair();
    const server = serveSession(serverEnd, {
      pool: options.pool,
      // This process writes the destination: its caller asks for the owner only as root.
      grantOwner: true,
      open: (req) =>
        abortable(
          options.openDestination?.(req) ?? openDestination(dst, {
            create: true,
            readOnly: req.dryRun,
            ffi: options.ffi,
            inplace: req.inplace,
            lockWaitMs: options.lockWaitMs,
            log: options.log,
          }),
          options.signal,
          { discard: (late) => late[Symbol.asyncDispose]() },
        ),
    });
    try {
      return await runClient(clientEnd, source, {
        mode: "push",
        name: dst,
        blockSize: options.blockSize,
        hash: options.hash,
        dryRun: options.dryRun,
        inplace: options.inplace,
        refine: options.refine,
        compress: options.compress,
        allowShrink: options.allowShrink,
        pool: options.pool,
        signal: options.signal,
        progress: options.progress,
        metadata: options.metadata,
      });
    } finally {
      await server;
    }
  } finally {
    await source[Symbol.asyncDispose]();
  }
}
