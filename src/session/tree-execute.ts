/**
 * Carrying out a folder sync's plan (tree-plan.ts) through the two sides' operations
 * (`TreeSides`): the local folder sync's (tree-sync.ts) and a network one's (remote-tree-sync.ts:
 * a batch with a listener) share it.
 *
 * 1. files, in the plan's order: folders made, files synced (at most `sides.concurrency` at
 *    once; each file waits for the folders before it in the plan, which the pre-order puts
 *    first), skipped, or failed; one that fails is recorded and the next goes on; an abort
 *    (Ctrl-C) ends the whole run at once;
 * 2. delete (`delete`): the plan's removals, only once every file is done and when nothing
 *    failed in 1 (as rsync's "IO error encountered -- skipping file deletion"); a removal that
 *    fails is recorded, the next goes on.
 *
 * Invariants: nothing below a folder that could not be made is attempted; every YIELD_EVERY
 * actions the event loop runs and `signal` is checked; a dry run makes and removes nothing
 * (the sides' sync runs as a dry run).
 */
import type { TreeEntryKind } from "../storage/tree-entry.ts";
import type { RemoveOutcome } from "../storage/tree-folder.ts";
import { YIELD_EVERY, yieldToEventLoop } from "../storage/tree-walk.ts";
import { ErrnoError } from "../util/errors.ts";
import type { SyncReport } from "./client-session.ts";
import { SessionProgress } from "./session-progress.ts";
import type { SyncReason, TreeAction, TreePlan, TreePlanTotals } from "./tree-plan.ts";
import type { TreeProgress } from "./tree-progress.ts";

export type SyncAction = Extract<TreeAction, { type: "sync" }>;

/** What one side of a folder sync does, for the plan's actions. */
export interface TreeSides {
  /** Files synced at once (a batch's slots; 1 locally). */
  readonly concurrency: number;
  /** Makes the destination folder `path` (its parent exists). */
  mkdir(path: string, mode: number): Promise<void>;
  /** Syncs one file (a dry run when the run is one); throws when it failed. */
  sync(a: SyncAction, progress: SessionProgress): Promise<SyncReport>;
  /** Removes one destination entry (a folder: empty); `removed: false` with why it kept it. */
  remove(path: string, kind: TreeEntryKind): Promise<RemoveOutcome>;
}

export interface TreeExecuteOptions {
  dryRun: boolean;
  signal?: AbortSignal;
  progress?: TreeProgress;
  /** Told, as it happens, each entry skipped or kept and why. */
  note?: (path: string, note: string) => void;
  /** Told, as it happens, each file that failed (a folder not made, a removal: `removal`). */
  failed?: (path: string, error: unknown, o?: { removal?: boolean }) => void;
  /** After a file's sync committed (--verify runs here); a throw fails that file. */
  afterFile?: (path: string) => Promise<unknown>;
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

export function emptyTreeReport(dryRun: boolean): TreeReport {
  return { files: [], skipped: [], excluded: 0, made: [], deleted: [], kept: [], deleteFailures: [], folderFailures: [], dryRun, seconds: 0 };
}

function parentOf(path: string): string {
  const at = path.lastIndexOf("/");
  return at < 0 ? "" : path.slice(0, at);
}

/** Steps 1 and 2 into `report` (the caller's: it may hold the listings' notes already). */
export async function executeTreePlan(plan: TreePlan, sides: TreeSides, report: TreeReport, o: TreeExecuteOptions): Promise<void> {
  const started = performance.now();
  report.totals = plan.totals;
  report.excluded = plan.totals.excluded;
  o.progress?.plan({ files: plan.totals.files, bytes: plan.totals.bytes });

  /** Destination folders that could not be made: nothing is written below them. */
  const broken = new Map<string, unknown>();
  const removals: TreeAction[] = [];
  /** Files being synced; each settles to its FileResult, never rejects. */
  const running = new Set<Promise<void>>();
  const finish = (a: SyncAction, result: FileResult) => {
    if (result.outcome === "failed") o.failed?.(a.path, result.error);
    report.files.push(result);
  };
  let done = 0;
  try {
    for (const a of plan.actions) {
      if (++done % YIELD_EVERY === 0) await yieldToEventLoop();
      o.signal?.throwIfAborted();
      switch (a.type) {
        case "mkdir": {
          const up = broken.get(parentOf(a.path));
          if (up !== undefined) broken.set(a.path, up);
          else if (!o.dryRun) {
            try {
              await sides.mkdir(a.path, a.mode ?? 0o755);
            } catch (err) {
              o.signal?.throwIfAborted();
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
          if (up !== undefined) {
            finish(a, { path: a.path, size: a.size, outcome: "failed", error: up });
            o.progress?.fileDone(a.size);
            break;
          }
          while (running.size >= Math.max(1, sides.concurrency)) await Promise.race(running);
          o.signal?.throwIfAborted();
          const p: Promise<void> = syncOne(a, sides, o).then((result) => finish(a, result)).finally(() => running.delete(p));
          running.add(p);
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
  } finally {
    // Every file started is awaited, even on an abort: none is left running behind the report.
    await Promise.all(running);
  }
  o.signal?.throwIfAborted();
  // Files finish out of order when several run at once: the report lists them in the plan's.
  const order = new Map(plan.actions.map((a, i) => [a.path, i]));
  report.files.sort((x, y) => (order.get(x.path) ?? 0) - (order.get(y.path) ?? 0));

  const failures = report.files.filter((f) => f.outcome === "failed").length + report.folderFailures.length;
  if (removals.some((a) => a.type !== "keep") && failures > 0) {
    report.deleteSkipped = `${failures} ${failures === 1 ? "entry" : "entries"} failed: nothing deleted (as rsync after an I/O error); rerun once ${failures === 1 ? "it is" : "they are"} fixed`;
    o.note?.(".", report.deleteSkipped);
  } else {
    await remove(removals, sides, { o, report });
  }
  report.seconds += (performance.now() - started) / 1000;
}

async function remove(removals: readonly TreeAction[], sides: TreeSides, c: { o: TreeExecuteOptions; report: TreeReport }): Promise<void> {
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
      const r = await sides.remove(a.path, kind);
      if (r.removed) c.report.deleted.push({ path: a.path, kind });
      else {
        c.report.kept.push({ path: a.path, note: r.note });
        c.o.note?.(a.path, r.note);
      }
    } catch (error) {
      c.o.signal?.throwIfAborted();
      c.report.deleteFailures.push({ path: a.path, error });
      c.o.failed?.(a.path, error, { removal: true });
    }
  }
}

async function syncOne(a: SyncAction, sides: TreeSides, o: TreeExecuteOptions): Promise<FileResult> {
  const base = { path: a.path, size: a.size, reason: a.reason };
  // A dry run makes no folder: a file in one still to make would be new, all of it.
  if (o.dryRun && a.newFolder) {
    o.progress?.fileDone(a.size);
    return { ...base, outcome: "synced" };
  }
  const progress = new SessionProgress();
  o.progress?.startFile(progress);
  try {
    const report = await sides.sync(a, progress);
    if (o.afterFile === undefined || o.dryRun) return { ...base, outcome: "synced", report };
    await o.afterFile(a.path);
    return { ...base, outcome: "synced", report, verified: true };
  } catch (error) {
    if (o.signal?.aborted) return { ...base, outcome: "failed", error: o.signal.reason };
    return { ...base, outcome: "failed", error };
  } finally {
    o.progress?.fileDone(a.size, progress);
  }
}
