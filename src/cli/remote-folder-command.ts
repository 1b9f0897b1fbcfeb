/**
 * `ssync push DIR/ HOST[:PORT]:DIR/` and `ssync pull HOST[:PORT]:DIR/ DIR/`: a folder with a
 * listener, every file over one batch (one connection, one handshake; session/remote-tree-sync.ts).
 *
 * 1. the command line as push and pull read it (remote-sync-command.ts: aliases, keys,
 *    known_hosts, --bwlimit, --idle-timeout); both folder names end with "/" (as `ssync sync`
 *    and rsync: "the contents of"); the listener's root is `HOST:./`;
 * 2. dial and BATCH, tried again while the listener is busy (--wait); a listener that
 *    predates batches is named as such;
 * 3. the folder sync; --verify: each file synced is compared again by a dry-run session on
 *    the same batch (fresh hash key), which must find nothing to send;
 * 4. the folder summary (text, or --json with each file), printed by the caller.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { MAX_SLOTS } from "../../protocol/constants.ts";
import { networkPool } from "./network-pool.ts";
import type { BatchClient } from "../session/batch-client.ts";
import { dialBatch } from "../session/dial-batch.ts";
import { syncRemoteTree } from "../session/remote-tree-sync.ts";
import { TreeProgress } from "../session/tree-progress.ts";
import { SignatureCache } from "../storage/signature-cache.ts";
import { storageError } from "../storage/storage-error.ts";
import { MismatchError, UsageError } from "../util/errors.ts";
import { formatBytes } from "../util/format-bytes.ts";
import { clientCacheDir } from "./cache-options.ts";
import { describeSettings } from "./engine-options.ts";
import { describeError } from "./exit-code.ts";
import { type FolderSummary, summarizeFolder } from "./folder-summary.ts";
import { remoteContext, type RemoteFlags, type RemoteTarget } from "./remote-sync-command.ts";
import { showProgress } from "./show-progress.ts";
import { folderFilter, type FolderFlags, folderOpener, folderOptionGiven, isFolder } from "./sync-folder-command.ts";
import { retryWhileBusy } from "./wait-while-busy.ts";

export interface RemoteFolderFlags extends RemoteFlags, Pick<FolderFlags, "include" | "exclude" | "delete" | "checksum"> {}

/** push's and pull's folder options (as `ssync sync`'s). */
// deno-lint-ignore no-explicit-any
export function withFolderOptions<T extends { option: (...a: any[]) => T }>(cmd: T): T {
  return cmd
    .option("--include <glob>", "Folder: keep the paths it matches (repeatable; with --exclude, the first matching rule wins, as rsync)")
    .option("--exclude <glob>", "Folder: leave out the paths it matches, relative to the folder; an excluded folder is not entered (repeatable)")
    .option("--delete", "Folder: remove what the destination holds and the source does not (not excluded paths), only if no file failed; with -n, list it")
    .option("--checksum", "Folder: compare every file, even those whose size and mtime match (no quick check)");
}

/**
 * Whether push/pull names folders: LOCAL and the remote PATH both end with "/" (a push may
 * leave PATH out: LOCAL's name is the remote folder). A folder named without its slash, or a
 * folder onto a file, is a usage error; so is a folder-only option on a file.
 */
export function isRemoteFolderSync(mode: "push" | "pull", local: string, remotePath: string | undefined, flags: RemoteFolderFlags): boolean {
  const localSlash = local.endsWith("/");
  const remoteSlash = remotePath?.endsWith("/") === true;
  const localFolder = isFolder(local);
  const folderForm = localSlash || remoteSlash || (mode === "push" && localFolder === true);
  if (!folderForm) {
    const given = folderOptionGiven(flags);
    if (given) throw new UsageError(`--${given} is for a folder ${mode} only (both names end with a slash: ${usage(mode)})`);
    if (mode === "pull" && localFolder === true) {
      throw new UsageError(`Cannot pull a file onto ${local}: it is a folder; name the local file, or pull a folder: ${usage(mode)}`);
    }
    return false;
  }
  if (!localSlash || (remotePath !== undefined && !remoteSlash) || (mode === "pull" && remotePath === undefined)) {
    throw new UsageError(`A folder ${mode} names both folders with a trailing slash: ${usage(mode)}`);
  }
  if (mode === "push" && localFolder !== true) throw new UsageError(`Cannot push the folder ${local}: ${localFolder === false ? "it is not a folder" : "it does not exist"}`);
  if (mode === "pull" && localFolder === false) throw new UsageError(`Cannot pull a folder onto ${local}: it is a file`);
  return true;
}

function usage(mode: "push" | "pull"): string {
  return mode === "push" ? "ssync push DIR/ HOST[:PORT]:DIR/" : "ssync pull HOST[:PORT]:DIR/ DIR/";
}

/** The listener's folder as LIST and MKDIR name it: no trailing slash, "" for its root ("./"). */
export function remoteFolderName(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed === "." ? "" : trimmed;
}

export async function runRemoteFolderSync(
  mode: "push" | "pull",
  options: { local: string; remote: RemoteTarget & { path: string }; flags: RemoteFolderFlags; signal?: AbortSignal; argv?: readonly string[] },
): Promise<{ summary: FolderSummary; failure?: Error }> {
  const { signal } = options;
  const local = options.local;
  const ctx = await remoteContext(mode, options);
  const { o, owner, say, detail } = ctx;
  const flags = ctx.flags as RemoteFolderFlags;
  const folder = remoteFolderName(ctx.remote.path);
  const remoteShown = `${ctx.peer}:${folder === "" ? "./" : `${folder}/`}`;
  if (mode === "pull" && isFolder(local) === undefined && !o.dryRun) {
    try {
      fs.mkdirSync(local, { mode: 0o755 });
    } catch (e) {
      throw storageError("create the folder", local, { cause: e });
    }
  }
  detail(
    `${mode} folder ${mode === "push" ? `${local} -> ${remoteShown}` : `${remoteShown} -> ${local}`}: ` +
      describeSettings(o, ctx.bwlimit === undefined ? [] : [`bwlimit ${formatBytes(ctx.bwlimit)}/s`]),
  );
  const pool = networkPool();
  const progress = new TreeProgress();
  const open = folderOpener(local, { lockWaitMs: o.waitMs, log: (m) => say(`ssync: ${m}`) });
  let batch: BatchClient | undefined;
  try {
    // As many slots as a listener grants: small files overlap their round trips and fsyncs.
    batch = await retryWhileBusy((n) => dialBatch({ ...ctx.channel, pairCode: n === 0 ? ctx.pairCode : undefined, slots: MAX_SLOTS }), { waitMs: o.waitMs, signal });
    const b = batch;
    const stopProgress = showProgress(progress, { format: ctx.format, local: false, phase: "sync", signal });
    const remoteName = (p: string) => (folder === "" ? p : `${folder}/${p}`);
    const report = await syncRemoteTree(b, {
      mode,
      local,
      remote: folder,
      open,
      blockSize: o.blockSize,
      hash: o.hash,
      dryRun: o.dryRun,
      inplace: o.inplace,
      refine: o.refine,
      compress: o.compress,
      metadata: owner.wanted,
      allowShrink: o.allowShrink,
      cacheKey: ctx.useCache,
      pool,
      signal,
      progress,
      filter: folderFilter(flags, options.argv),
      delete: flags.delete === true,
      checksum: flags.checksum === true,
      // A file --delete removes here leaves no signature cache entry behind (a pull of it alone kept one).
      ...(mode === "pull" && !o.dryRun ? { cache: new SignatureCache(clientCacheDir()) } : {}),
      note: (path, note) => say(`ssync: ${path}: ${note}`),
      failed: (path, e) => console.error(`ssync: ${path}: ${describeError(e)}`),
      afterFile: o.verify && !o.dryRun
        ? async (p) => {
          // A second comparison, fresh key, nothing written: it must find nothing to send.
          await using store = await open({ name: p, mode: "pull", dryRun: true, inplace: false });
          const check = await b.sync(store, { mode, name: remoteName(p), blockSize: o.blockSize, hash: o.hash, dryRun: true, pool, signal });
          if (check.local.blocksSent !== 0 || check.local.bytesZeroed !== 0) {
            throw new MismatchError(`Verification failed: a second comparison found ${check.local.blocksSent} differing blocks and ${check.local.bytesZeroed} bytes to zero`);
          }
        }
        : undefined,
    }).finally(stopProgress);
    await b.close();
    batch = undefined;
    const [source, destination] = mode === "push" ? [local, remoteShown] : [remoteShown, local];
    return summarizeFolder(report, { mode, source, destination, verified: o.verify && !o.dryRun, warnings: owner.notes });
  } finally {
    await batch?.[Symbol.asyncDispose]();
    await pool[Symbol.asyncDispose]();
  }
}

/** The folder the listener's PATH names when a push leaves it out: LOCAL's own name. */
export function defaultRemoteFolder(local: string): string {
  return `${nodePath.basename(nodePath.resolve(local))}/`;
}
