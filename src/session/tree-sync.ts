/**
 * `ssync sync SRC/ DST/`: every regular file under SRC synced to the same place under DST,
 * each by syncLocal (the single-file sync: exact, sparse, journaled, root hash), one after
 * the other on the caller's one WorkerPool.
 *
 * 1. count: a first walk counts the files and bytes to do (for the progress line);
 * 2. sync: a second walk; folders are made on the destination (tree-folder.ts), files the
 *    filters exclude are left alone, other kinds (links, devices, fifos, sockets) skipped with
 *    a note; a file the quick check finds identical is not opened for reading (quick-check.ts;
 *    not with `checksum`); every other file is synced, and one that fails is recorded and the
 *    next one goes on. An abort (Ctrl-C) ends the whole run at once;
 * 3. delete (`delete`): what DST holds and SRC does not, filters applied (delete-absent.ts).
 *
 * Invariant: the source is only ever opened as the file its walk found (O_NOFOLLOW, same device
 * and inode: open-source.ts identity); nothing outside SRC is read, nothing outside DST written.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { deleteAbsent } from "../storage/delete-absent.ts";
import { quickCheckSame } from "../storage/quick-check.ts";
import { ensureFolder, folderExists } from "../storage/tree-folder.ts";
import { entryKind, type TreeEntryKind, walkTree } from "../storage/tree-walk.ts";
import type { PathFilter } from "../util/path-filter.ts";
import type { SyncReport } from "./client-session.ts";
import { type LocalSyncOptions, syncLocal } from "./local-sync.ts";
import { SessionProgress } from "./session-progress.ts";
import type { TreeProgress } from "./tree-progress.ts";

export interface TreeSyncOptions extends Omit<LocalSyncOptions, "progress" | "sourceIdentity"> {
  filter: PathFilter;
  /** --delete: remove what the destination has and the source does not. */
  delete: boolean;
  /** --checksum: compare every file, no quick check. */
  checksum: boolean;
  progress?: TreeProgress;
  /** Told, as it happens, each entry skipped or kept and why. */
  note?: (path: string, note: string) => void;
  /** Told, as it happens, each file that failed. */
  failed?: (path: string, error: unknown) => void;
  /** After a file's sync committed (--verify runs here); a throw fails that file. */
  afterFile?: (src: string, dst: string) => Promise<unknown>;
}

export type FileOutcome = "synced" | "quick-check" | "failed";

export interface FileResult {
  /** Relative to the synced folders. */
  readonly path: string;
  readonly size: number;
  readonly outcome: FileOutcome;
  /** The file's session ("synced"); absent for a dry run's file in a folder still to make. */
  readonly report?: SyncReport;
  readonly error?: unknown;
}

export interface TreeReport {
  readonly files: FileResult[];
  /** Entries not synced: their kind and why. */
  readonly skipped: { path: string; kind: TreeEntryKind; note: string }[];
  /** Files left out by --include/--exclude. */
  excluded: number;
  /** Removed by --delete (a dry run: would be). */
  readonly deleted: { path: string; kind: TreeEntryKind }[];
  /** Absent from the source and kept anyway, and why. */
  readonly kept: { path: string; note: string }[];
  readonly dryRun: boolean;
  seconds: number;
}

const SKIP_NOTES: Record<Exclude<TreeEntryKind, "file" | "folder">, string> = {
  symlink: "a symbolic link: skipped, never followed nor recreated",
  "block-device": "a block device: skipped inside a folder (sync it by name)",
  "char-device": "a character device: skipped",
  fifo: "a fifo: skipped",
  socket: "a socket: skipped",
};

export async function syncTree(src: string, dst: string, o: TreeSyncOptions): Promise<TreeReport> {
  const started = performance.now();
  const descend = (p: string) => !o.filter.prunes(p);
  const report: TreeReport = { files: [], skipped: [], excluded: 0, deleted: [], kept: [], dryRun: o.dryRun, seconds: 0 };
  let files = 0;
  let bytes = 0;
  for (const e of walkTree(src, { descend })) {
    if (e.kind === "file" && !o.filter.excludes(e.path)) (files++, bytes += Number(e.stat.size));
  }
  o.progress?.plan({ files, bytes });

  /** Destination folders that could not be made: nothing is written below them. */
  const broken = new Map<string, unknown>();
  const parentOf = (p: string) => p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
  for (const e of walkTree(src, { descend })) {
    o.signal?.throwIfAborted();
    if (e.leave) continue;
    const parentBroken = broken.get(parentOf(e.path));
    if (e.kind === "folder") {
      if (parentBroken !== undefined) broken.set(e.path, parentBroken);
      else if (!o.dryRun && descend(e.path)) {
        try {
          ensureFolder(dst, e.path, { mode: Number(e.stat.mode) });
        } catch (err) {
          broken.set(e.path, err);
        }
      }
      continue;
    }
    if (e.kind !== "file") {
      report.skipped.push({ path: e.path, kind: e.kind, note: SKIP_NOTES[e.kind] });
      o.note?.(e.path, SKIP_NOTES[e.kind]);
      continue;
    }
    if (o.filter.excludes(e.path)) {
      report.excluded++;
      continue;
    }
    const size = Number(e.stat.size);
    const to = nodePath.join(dst, e.path);
    const result = parentBroken !== undefined
      ? { path: e.path, size, outcome: "failed" as const, error: parentBroken }
      : await syncOne(e, { src: nodePath.join(src, e.path), dst: to, dstRoot: dst, size, o });
    if (result.outcome === "failed") o.failed?.(e.path, result.error);
    report.files.push(result);
    o.progress?.fileDone(size);
  }

  if (o.delete) {
    deleteAbsent(dst, {
      dryRun: o.dryRun,
      sourceHas: (p, kind) => o.filter.excludes(p, { folder: kind === "folder" }) ? "excluded" : kindAt(nodePath.join(src, p)),
      removed: (path, kind) => report.deleted.push({ path, kind }),
      note: (path, note) => {
        report.kept.push({ path, note });
        o.note?.(path, note);
      },
    });
  }
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

async function syncOne(
  e: { path: string; stat: fs.BigIntStats; at: string },
  c: { src: string; dst: string; dstRoot: string; size: number; o: TreeSyncOptions },
): Promise<FileResult> {
  const { o } = c;
  const base = { path: e.path, size: c.size };
  const wanted = { perms: o.metadata?.perms === true, owner: o.metadata?.owner === true };
  if (!o.checksum && quickCheckSame(e.at, c.dst, wanted)) return { ...base, outcome: "quick-check" };
  // A dry run makes no folder: a file in one still to make would be new, all of it.
  if (o.dryRun && !folderExists(c.dstRoot, e.path.includes("/") ? e.path.slice(0, e.path.lastIndexOf("/")) : "")) {
    return { ...base, outcome: "synced" };
  }
  const progress = new SessionProgress();
  o.progress?.startFile(progress);
  try {
    const report = await syncLocal(c.src, c.dst, { ...o, progress, sourceIdentity: { dev: e.stat.dev, ino: e.stat.ino } });
    await o.afterFile?.(c.src, c.dst);
    return { ...base, outcome: "synced", report };
  } catch (error) {
    if (o.signal?.aborted) throw o.signal.reason;
    return { ...base, outcome: "failed", error };
  }
}

/** The kind of what `path` names (never what a link points to), or undefined when nothing does. */
function kindAt(path: string): TreeEntryKind | undefined {
  try {
    return entryKind(fs.lstatSync(path));
  } catch {
    return undefined;
  }
}
