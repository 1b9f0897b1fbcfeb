/**
 * `ssync sync SRC/ DST/`: the local executor of a folder sync. Each file is synced by syncLocal
 * (the single-file sync: exact, sparse, journaled, root hash), one after the other on the
 * caller's one WorkerPool.
 *
 * 1. list: both trees are walked (storage/tree-walk.ts: no link followed, excluded folders not
 *    entered, a folder that is the other root refused) into entry lists, the destination's
 *    only if it exists;
 * 2. plan: session/tree-plan.ts decides every action from the two lists alone;
 * 3. files, in the plan's order: folders made (storage/tree-folder.ts), files synced through
 *    `open` (descriptors pinned from the roots: nothing is opened through a link), skipped,
 *    or failed; one that fails is recorded and the next goes on; an abort (Ctrl-C) ends the
 *    whole run at once;
 * 4. delete (`delete`): the plan's removals, only when nothing failed in 1–3 (as rsync's "IO
 *    error encountered -- skipping file deletion"); a removal that fails is recorded, the
 *    next goes on.
 *
 * Invariants: nothing outside SRC is read, nothing outside DST written or removed; every
 * YIELD_EVERY actions (and entries of a walk) the event loop runs and `signal` is checked;
 * a dry run makes, writes and removes nothing.
 */
import fs from "node:fs";
import nodePath from "node:path";
import type { Storage } from "../storage/storage.ts";
import { MAX_TREE_ENTRIES, type TreeEntry, type TreeEntryKind } from "../storage/tree-entry.ts";
import { makeFolderUnder, removeUnder } from "../storage/tree-folder.ts";
import { type WalkCounters, walkTree, YIELD_EVERY, yieldToEventLoop } from "../storage/tree-walk.ts";
import { ErrnoError, UsageError } from "../util/errors.ts";
import type { PathFilter } from "../util/path-filter.ts";
import type { SyncReport } from "./client-session.ts";
import { type LocalSyncOptions, syncLocal } from "./local-sync.ts";
import type { OpenRequest } from "./server-session.ts";
import { SessionProgress } from "./session-progress.ts";
import { planTree, type SyncReason, type TreeAction, type TreePlanTotals } from "./tree-plan.ts";
import type { TreeProgress } from "./tree-progress.ts";
import { destinationMode } from "../storage/file-metadata.ts";

export interface TreeSyncOptions extends Omit<LocalSyncOptions, "progress" | "openSource" | "openDestination"> {
  filter: PathFilter;
  /** --delete: remove what the destination has and the source does not. */
  delete: boolean;
  /** --checksum: compare every file, no quick check. */
  checksum: boolean;
  /** Opens the file `req.name` of one side, never through a link (the CLI's: rooted at SRC or DST). */
  open: (side: "source" | "destination", req: OpenRequest) => Promise<Storage>;
  progress?: TreeProgress;
  /** Told, as it happens, each entry skipped or kept and why. */
  note?: (path: string, note: string) => void;
  /** Told, as it happens, each file that failed (a folder not made, a removal: `removal`). */
  failed?: (path: string, error: unknown, o?: { removal?: boolean }) => void;
  /** After a file's sync committed (--verify runs here); a throw fails that file. */
  afterFile?: (path: string) => Promise<unknown>;
  /** Default MAX_TREE_ENTRIES per side. */
  maxEntries?: number;
}

export type FileOutcome = "synced" | "quick-check" | "failed";

export interface FileResult {
  /** Relative to the synced folders. */
  readonly path: string;
  readonly size: number;
  readonly outcome: FileOutcome;
  /** Why it was synced (the plan's reason). */
  readonly reason?: SyncReason;
  /** The file's session ("synced"); absent for a dry run's file in a folder still to make. */
  readonly report?: SyncReport;
  /** afterFile (--verify) ran and passed. */
  readonly verified?: boolean;
  readonly error?: unknown;
}

export interface TreeReport {
  readonly files: FileResult[];
  /** Entries not synced (their kind and why), and names left out of a listing. */
  readonly skipped: { path: string; kind: TreeEntryKind; note: string }[];
  /** Entries left out by --include/--exclude (an excluded folder counts once). */
  excluded: number;
  /** Folders made (a dry run: that would be). */
  readonly made: string[];
  /** Removed by --delete (a dry run: would be). */
  readonly deleted: { path: string; kind: TreeEntryKind }[];
  /** Absent from the source and kept anyway, and why. */
  readonly kept: { path: string; note: string }[];
  /** Removals that failed. */
  readonly deleteFailures: { path: string; error: unknown }[];
  /** Why the plan's removals were not done (some file failed), or undefined. */
  deleteSkipped?: string;
  /** Folders that could not be made. */
  readonly folderFailures: { path: string; error: unknown }[];
  readonly dryRun: boolean;
  totals?: TreePlanTotals;
  seconds: number;
}

function parentOf(path: string): string {
  const at = path.lastIndexOf("/");
  return at < 0 ? "" : path.slice(0, at);
}

function identity(path: string): { dev: bigint; ino: bigint } | undefined {
  try {
    const st = fs.statSync(path, { bigint: true });
    return { dev: st.dev, ino: st.ino };
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return undefined;
    throw e;
  }
}

async function list(root: string, o: { other?: { dev: bigint; ino: bigint }; otherName: string; t: TreeSyncOptions; report: TreeReport }): Promise<TreeEntry[]> {
  const entries: TreeEntry[] = [];
  const counters: WalkCounters = { entries: 0, undecodable: 0 };
  const walk = walkTree(root, {
    signal: o.t.signal,
    maxEntries: o.t.maxEntries ?? MAX_TREE_ENTRIES,
    descend: (f) => !o.t.filter.excludes(f.path, { folder: true }),
    note: (folder, note) => {
      o.report.skipped.push({ path: folder === "" ? "." : folder, kind: "other", note });
      o.t.note?.(folder === "" ? "." : folder, note);
    },
    forbidden: o.other && {
      ...o.other,
      refuse: (p) => new UsageError(`Cannot sync the folder ${nodePath.join(root, p)}: it is ${o.otherName} (a bind mount or the like): one of SRC and DST is inside the other`),
    },
  }, counters);
  for await (const e of walk) entries.push(e);
  return entries;
}

export async function syncTree(src: string, dst: string, o: TreeSyncOptions): Promise<TreeReport> {
  const started = performance.now();
  const report: TreeReport = {
    files: [],
    skipped: [],
    excluded: 0,
    made: [],
    deleted: [],
    kept: [],
    deleteFailures: [],
    folderFailures: [],
    dryRun: o.dryRun,
    seconds: 0,
  };
  const srcId = identity(src);
  const dstId = identity(dst);
  const source = await list(src, { other: dstId, otherName: `the destination ${dst}`, t: o, report });
  const destination = dstId === undefined ? [] : await list(dst, { other: srcId, otherName: `the source ${src}`, t: o, report });
  const plan = planTree(source, destination, {
    checksum: o.checksum,
    delete: o.delete,
    filter: o.filter,
    perms: o.metadata?.perms === true ? { destinationMode } : undefined,
    owner: o.metadata?.owner === true,
    destinationMissing: dstId === undefined,
  });
  report.totals = plan.totals;
  report.excluded = plan.totals.excluded;
  o.progress?.plan({ files: plan.totals.files, bytes: plan.totals.bytes });

  /** Destination folders that could not be made: nothing is written below them. */
  const broken = new Map<string, unknown>();
  const removals: TreeAction[] = [];
  let done = 0;
  for (const a of plan.actions) {
    if (++done % YIELD_EVERY === 0) await yieldToEventLoop();
    o.signal?.throwIfAborted();
    switch (a.type) {
      case "mkdir": {
        const up = broken.get(parentOf(a.path));
        if (up !== undefined) broken.set(a.path, up);
        else if (!o.dryRun) {
          try {
            makeFolderUnder(dst, a.path, { mode: a.mode ?? 0o755 });
          } catch (err) {
            broken.set(a.path, err);
            report.folderFailures.push({ path: a.path, error: err });
            o.failed?.(`${a.path}/`, err);
            continue;
          }
        }
        report.made.push(a.path);
        break;
      }
      case "sync": {
        const up = broken.get(parentOf(a.path));
        const result: FileResult = up !== undefined
          ? { path: a.path, size: a.size, outcome: "failed", error: up }
          : await syncOne(a, o);
        if (result.outcome === "failed") o.failed?.(a.path, result.error);
        report.files.push(result);
        o.progress?.fileDone(a.size);
        break;
      }
      case "quick-check":
        report.files.push({ path: a.path, size: a.size, outcome: "quick-check" });
        o.progress?.fileDone(a.size);
        break;
      case "skip":
        report.skipped.push({ path: a.path, kind: a.kind, note: a.note });
        o.note?.(a.path, a.note);
        break;
      case "fail": {
        const error = new ErrnoError(a.error.code, a.error.message);
        report.files.push({ path: a.path, size: a.size, outcome: "failed", error });
        o.failed?.(a.path, error);
        o.progress?.fileDone(a.size);
        break;
      }
      case "delete":
      case "rmdir":
      case "keep":
        removals.push(a);
        break;
      default:
        a satisfies never;
    }
  }

  const failures = report.files.filter((f) => f.outcome === "failed").length + report.folderFailures.length;
  if (removals.some((a) => a.type !== "keep") && failures > 0) {
    report.deleteSkipped = `${failures} ${failures === 1 ? "entry" : "entries"} failed: nothing deleted (as rsync after an I/O error); rerun once ${failures === 1 ? "it is" : "they are"} fixed`;
    o.note?.(".", report.deleteSkipped);
  } else {
    await remove(dst, removals, { o, report });
  }
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

async function remove(dst: string, removals: readonly TreeAction[], c: { o: TreeSyncOptions; report: TreeReport }): Promise<void> {
  let done = 0;
  for (const a of removals) {
    if (++done % YIELD_EVERY === 0) await yieldToEventLoop();
    c.o.signal?.throwIfAborted();
    if (a.type === "keep") {
      c.report.kept.push({ path: a.path, note: a.note });
      c.o.note?.(a.path, a.note);
      continue;
    }
    if (a.type !== "delete" && a.type !== "rmdir") continue;
    const kind: TreeEntryKind = a.type === "rmdir" ? "folder" : a.kind;
    if (c.o.dryRun) {
      c.report.deleted.push({ path: a.path, kind });
      continue;
    }
    try {
      const r = removeUnder(dst, a.path, kind);
      if (r.removed) c.report.deleted.push({ path: a.path, kind });
      else {
        c.report.kept.push({ path: a.path, note: r.note });
        c.o.note?.(a.path, r.note);
      }
    } catch (error) {
      c.report.deleteFailures.push({ path: a.path, error });
      c.o.failed?.(a.path, error, { removal: true });
    }
  }
}

async function syncOne(a: Extract<TreeAction, { type: "sync" }>, o: TreeSyncOptions): Promise<FileResult> {
  const base = { path: a.path, size: a.size, reason: a.reason };
  // A dry run makes no folder: a file in one still to make would be new, all of it.
  if (o.dryRun && a.newFolder) return { ...base, outcome: "synced" };
  const progress = new SessionProgress();
  o.progress?.startFile(progress);
  try {
    const report = await syncLocal(a.path, a.path, {
      ...o,
      progress,
      openSource: () => o.open("source", { name: a.path, mode: "pull", dryRun: o.dryRun, inplace: false }),
      openDestination: (req) => o.open("destination", { ...req, name: a.path, mode: "push" }),
    });
    if (o.afterFile === undefined || o.dryRun) return { ...base, outcome: "synced", report };
    await o.afterFile(a.path);
    return { ...base, outcome: "synced", report, verified: true };
  } catch (error) {
    if (o.signal?.aborted) throw o.signal.reason;
    return { ...base, outcome: "failed", error };
  }
}
