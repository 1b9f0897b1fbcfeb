/**
 * `ssync sync SRC/ DST/`: the folder form of `ssync sync` (session/tree-sync.ts), and the rule
 * that tells it from the file form.
 *
 * Both names of a folder sync end with "/" (rsync's "the contents of SRC into DST"); a folder
 * named without it, a file onto a folder and a folder onto a file are usage errors. DST is made
 * when missing (its parent must exist), with SRC's rwx bits masked by the umask, plus u+rwx.
 */
import fs from "node:fs";
import nodePath from "node:path";
import process from "node:process";
import { verifyIdentical } from "../engine/verify.ts";
import { WorkerPool } from "../engine/worker-pool.ts";
import { TreeProgress } from "../session/tree-progress.ts";
import { syncTree } from "../session/tree-sync.ts";
import { storageError } from "../storage/storage-error.ts";
import { abortable } from "../util/abortable.ts";
import { UsageError } from "../util/errors.ts";
import { PathFilter } from "../util/path-filter.ts";
import { describeSettings, type EngineFlags, engineOptions, ownerIfRoot } from "./engine-options.ts";
import { describeError } from "./exit-code.ts";
import { type FolderSummary, formatFolderSummary, summarizeFolder } from "./folder-summary.ts";
import { progressFormat } from "./progress-mode.ts";
import { showProgress } from "./show-progress.ts";
import { localSyncError, type SyncHooks } from "./sync-command.ts";

export interface FolderFlags extends EngineFlags {
  include?: string | string[];
  exclude?: string | string[];
  delete?: boolean;
  checksum?: boolean;
}

function isFolder(path: string): boolean | undefined {
  try {
    return fs.statSync(path).isDirectory();
  } catch {
    return undefined;
  }
}

/** Whether `ssync sync SRC DST` is a folder sync; throws the usage error when the two forms are mixed. */
export function isFolderSync(src: string, dst: string, flags: FolderFlags): boolean {
  const srcSlash = src.endsWith("/");
  const dstSlash = dst.endsWith("/");
  const srcFolder = isFolder(src);
  const dstFolder = isFolder(dst);
  const folderOnly = ["include", "exclude", "delete", "checksum"].filter((k) => {
    const v = flags[k as keyof FolderFlags];
    return v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0);
  });
  if (srcFolder === true || srcSlash) {
    if (srcFolder === true && !srcSlash) {
      throw new UsageError(`${src} is a folder: to sync what it holds into ${dst}, end both names with a slash: ssync sync ${src}/ ${dst.replace(/\/*$/, "/")}`);
    }
    if (srcFolder === false) throw new UsageError(`${src} ends with a slash but is not a folder`);
    if (dstFolder === false) throw new UsageError(`Cannot sync the folder ${src} onto ${dst}: it is a file; name a folder, ending with a slash`);
    if (!dstSlash) throw new UsageError(`A folder sync names both folders with a trailing slash: ssync sync ${src} ${dst}/`);
    return true;
  }
  if (dstSlash || dstFolder === true) {
    throw new UsageError(`Cannot sync the file ${src} onto ${dst}: it is a directory; name the destination file (${nodePath.join(dst, nodePath.basename(src))})`);
  }
  if (folderOnly.length > 0) throw new UsageError(`--${folderOnly[0]} is for a folder sync only (ssync sync SRC/ DST/)`);
  return false;
}

/** The real path of `p`, or of its parent joined with its name when it does not exist yet. */
function realPath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return nodePath.join(fs.realpathSync(nodePath.dirname(nodePath.resolve(p))), nodePath.basename(p));
  }
}

/**
 * SRC and DST must be apart: a DST inside SRC would be walked as source while it is filled,
 * and --delete into a DST that holds SRC would remove the source.
 */
function refuseNested(src: string, dst: string): void {
  let s: string;
  let d: string;
  try {
    s = fs.realpathSync(src);
    d = realPath(dst);
  } catch {
    return; // a missing name: the walk or mkdir says so
  }
  const inside = (a: string, b: string) => {
    const rel = nodePath.relative(a, b);
    return rel === "" || (!rel.startsWith("..") && !nodePath.isAbsolute(rel));
  };
  if (inside(s, d) || inside(d, s)) {
    throw new UsageError(`Cannot sync the folder ${src} into ${dst}: ${s === d ? "they are the same folder" : "one is inside the other"}`);
  }
}

function list(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)];
}

export async function runFolderSyncCommand(
  src: string,
  dst: string,
  flags: FolderFlags,
  hooks: SyncHooks = {},
): Promise<{ summary: FolderSummary; failure?: Error }> {
  const o = engineOptions(flags);
  const owner = ownerIfRoot(o.metadata);
  const say = (m: string) => o.quiet || console.error(`ssync: ${m}`);
  let srcMode: number;
  try {
    srcMode = fs.statSync(src).mode;
  } catch (e) {
    throw storageError("read the folder", src, { cause: e });
  }
  refuseNested(src, dst);
  if (isFolder(dst) === undefined && !o.dryRun) {
    try {
      fs.mkdirSync(dst, { mode: (srcMode & 0o777) | 0o700 });
    } catch (e) {
      throw storageError("create the folder", dst, { cause: e });
    }
  }
  const pool = new WorkerPool();
  const progress = new TreeProgress();
  const format = progressFormat(o.progress, { quiet: o.quiet, isTTY: process.stderr.isTTY === true });
  const stopProgress = showProgress(progress, { format, local: true, phase: "sync", signal: hooks.signal });
  if (o.verbose) console.error(`ssync: sync folder ${src} -> ${dst}: ${describeSettings(o)}`);
  try {
    const report = await syncTree(src, dst, {
      ...o,
      metadata: owner.wanted,
      pool,
      ffi: hooks.ffi,
      log: say,
      lockWaitMs: o.waitMs,
      signal: hooks.signal,
      progress,
      filter: new PathFilter({ include: list(flags.include), exclude: list(flags.exclude) }),
      delete: flags.delete === true,
      checksum: flags.checksum === true,
      note: (path, note) => say(`${path}: ${note}`),
      failed: (path, e) => console.error(`ssync: ${path}: ${describeError(localSyncError(e, o.waitMs))}`),
      afterFile: o.verify && !o.dryRun
        ? (s, d) => abortable(verifyIdentical(s, d, { ffi: hooks.ffi }), hooks.signal)
        : undefined,
    }).finally(stopProgress);
    for (const f of report.files) if (f.error !== undefined) (f as { error: unknown }).error = localSyncError(f.error, o.waitMs);
    return summarizeFolder(report, { source: src, destination: dst, verified: o.verify && !o.dryRun, warnings: owner.notes });
  } finally {
    await pool[Symbol.asyncDispose]();
  }
}

/** --quiet prints no summary for people; --json's object is still printed. */
export function printFolderSummary(s: FolderSummary, flags: { json?: boolean; quiet?: boolean }): void {
  if (flags.quiet && !flags.json) return;
  console.log(flags.json ? JSON.stringify(s) : formatFolderSummary(s));
}
