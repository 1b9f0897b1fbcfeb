/**
 * `ssync push DIR/ HOST:DIR/` and `ssync pull HOST:DIR/ DIR/`: a folder sync with a listener,
 * over one batch (batch-client.ts: one connection, one handshake, several files at once).
 *
 * 1. list: the local tree is walked (storage/tree-walk.ts, as a local folder sync walks it),
 *    the listener's folder listed (LIST: its whole subtree, never through a link); a push
 *    whose remote folder does not exist yet plans against nothing (a missing folder is made
 *    by MKDIR, its parent must exist), a pull whose remote folder does not exist fails;
 * 2. plan: session/tree-plan.ts, from the two lists alone (the remote one without the local
 *    fields: no attribute or pending check on that side; the listener keeps its own journals);
 * 3. execute: tree-execute.ts with this direction's operations — push: MKDIR, each file synced
 *    on a slot from the local source (opened by `open`: pinned to the local root, never
 *    through a link), REMOVE/RMDIR; pull: folders made and entries removed under the local
 *    root (storage/tree-folder.ts), each file synced on a slot into the local destination.
 *    As many files at once as the listener granted slots.
 *
 * Invariants: every name sent lies under the remote folder (the plan's paths are relative,
 * without "..": tree-entry.ts); nothing outside the local root is read, written or removed; a
 * folder the listener could not list ("unlisted") is never taken for empty, so nothing below
 * it is deleted on either side.
 */
import fs from "node:fs";
import type { TreeEntry as WireEntry } from "../../protocol/batch-messages.ts";
import type { Storage } from "../storage/storage.ts";
import type { TreeEntry } from "../storage/tree-entry.ts";
import type { SignatureCache } from "../storage/signature-cache.ts";
import { makeFolderUnder, removeUnder } from "../storage/tree-folder.ts";
import { RemoteError } from "../util/errors.ts";
import type { PathFilter } from "../util/path-filter.ts";
import type { BatchClient } from "./batch-client.ts";
import type { SyncOptions } from "./client-session.ts";
import type { OpenRequest } from "./server-session.ts";
import type { SessionProgress } from "./session-progress.ts";
import { emptyTreeReport, executeTreePlan, type TreeExecuteOptions, type TreeReport, type TreeSides } from "./tree-execute.ts";
import { planTree } from "./tree-plan.ts";
import { listLocalTree } from "./tree-sync.ts";
import { destinationMode } from "../storage/file-metadata.ts";

export interface RemoteTreeSyncOptions extends TreeExecuteOptions, Omit<SyncOptions, "name" | "activity" | "progress" | "signal" | "dryRun"> {
  mode: "push" | "pull";
  dryRun: boolean;
  /** The local folder (push: the source; pull: the destination). */
  local: string;
  /** The listener's folder: a path under its root, "" for the root itself. */
  remote: string;
  /** The local files, opened never through a link (the CLI's: pinned to `local`). */
  open: (req: OpenRequest) => Promise<Storage>;
  filter: PathFilter;
  delete: boolean;
  checksum: boolean;
  maxEntries?: number;
  /** Pull: the client's signature cache; a file --delete removes drops its entry there. */
  cache?: SignatureCache;
}

/** A LIST entry as the planner takes it: an "unlisted" folder is a folder with an error. */
export function plannerEntry(e: WireEntry): TreeEntry {
  if (e.kind === "unlisted") {
    return { path: e.name, kind: "folder", size: 0, mtimeNs: e.mtimeNs, error: { code: "EACCES", message: "the listener could not list this folder" } };
  }
  return { path: e.name, kind: e.kind, size: e.size, mtimeNs: e.mtimeNs };
}

/** The listener's entries under `remote`, or undefined when that folder does not exist. */
async function listRemote(batch: BatchClient, remote: string): Promise<TreeEntry[] | undefined> {
  try {
    return (await batch.list(remote)).map(plannerEntry);
  } catch (e) {
    if (e instanceof RemoteError && e.code === "ENOENT") return undefined;
    throw e;
  }
}

export async function syncRemoteTree(batch: BatchClient, o: RemoteTreeSyncOptions): Promise<TreeReport> {
  const started = performance.now();
  const report = emptyTreeReport(o.dryRun);
  const remoteName = (path: string) => (o.remote === "" ? path : `${o.remote}/${path}`);
  const shownRemote = o.remote === "" ? "the listener's root" : o.remote;

  const localEntries = o.mode === "pull" && !(await exists(o.local)) ? undefined : await listLocalTree(o.local, { otherName: "", t: o, report });
  const remoteEntries = await listRemote(batch, o.remote);
  if (o.mode === "pull" && remoteEntries === undefined) {
    throw new RemoteError("ENOENT", `Cannot pull the folder ${shownRemote}: the listener has no such folder`);
  }
  const [source, destination] = o.mode === "push" ? [localEntries ?? [], remoteEntries] : [remoteEntries ?? [], localEntries];
  if (o.mode === "push" && remoteEntries === undefined && !o.dryRun && o.remote !== "") await batch.mkdir(o.remote);
  const plan = planTree(source, destination ?? [], {
    checksum: o.checksum,
    delete: o.delete,
    filter: o.filter,
    // The listener's entries carry no mode: a pull compares the local destination's only.
    perms: o.mode === "pull" && o.metadata?.perms === true ? { destinationMode } : undefined,
    owner: false,
    destinationMissing: destination === undefined,
  });

  const syncOptions = (a: { path: string }, progress: SessionProgress) => ({
    name: remoteName(a.path),
    mode: o.mode,
    blockSize: o.blockSize,
    hash: o.hash,
    dryRun: o.dryRun,
    inplace: o.inplace,
    compress: o.compress,
    pool: o.pool,
    refine: o.refine,
    metadata: o.metadata,
    allowShrink: o.allowShrink,
    cacheKey: o.cacheKey,
    progress,
    signal: o.signal,
  });
  const sides: TreeSides = o.mode === "push"
    ? {
      concurrency: batch.slots,
      mkdir: (path) => batch.mkdir(remoteName(path)),
      sync: async (a, progress) => {
        await using store = await o.open({ name: a.path, mode: "pull", dryRun: o.dryRun, inplace: false });
        return await batch.sync(store, syncOptions(a, progress));
      },
      remove: async (path, kind) => {
        if (kind === "folder") await batch.rmdir(remoteName(path));
        else if (kind === "file") await batch.remove(remoteName(path));
        else return { removed: false, note: `a ${kind} on the listener, which removes only files and empty folders: left there` };
        return { removed: true };
      },
    }
    : {
      concurrency: batch.slots,
      mkdir: (path, mode) => Promise.resolve(makeFolderUnder(o.local, path, { mode })),
      sync: async (a, progress) => {
        await using store = await o.open({ name: a.path, mode: "push", dryRun: o.dryRun, inplace: o.inplace === true });
        return await batch.sync(store, syncOptions(a, progress));
      },
      remove: (path, kind) => Promise.resolve(removeUnder(o.local, path, kind, { cache: o.cache })),
    };
  report.seconds = (performance.now() - started) / 1000;
  await executeTreePlan(plan, sides, report, o);
  return report;
}

async function exists(path: string): Promise<boolean> {
  try {
    await fs.promises.stat(path);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return false;
    throw e;
  }
}
