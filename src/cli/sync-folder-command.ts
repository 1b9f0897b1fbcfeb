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
import { ErrnoError, UsageError } from "../util/errors.ts";
import { filterRules, PathFilter } from "../util/path-filter.ts";
import { openForClient, type OpenPolicy } from "../listener/open-for-client.ts";
import type { OpenRequest } from "../session/server-session.ts";
import type { Storage } from "../storage/storage.ts";
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

/** True for a folder, false for anything else, undefined when nothing is there (or it cannot be looked at). */
export function isFolder(path: string): boolean | undefined {
  try {
    return fs.statSync(path).isDirectory();
  } catch {
    return undefined;
  }
}

/** The first folder-only option given (--include, --exclude, --delete, --checksum), if any. */
export function folderOptionGiven(flags: Pick<FolderFlags, "include" | "exclude" | "delete" | "checksum">): string | undefined {
  return (["include", "exclude", "delete", "checksum"] as const).find((k) => {
    const v = flags[k];
    return v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0);
  });
}

/** Whether `ssync sync SRC DST` is a folder sync; throws the usage error when the two forms are mixed. */
export function isFolderSync(src: string, dst: string, flags: FolderFlags): boolean {
  const srcSlash = src.endsWith("/");
  const dstSlash = dst.endsWith("/");
  const srcFolder = isFolder(src);
  const dstFolder = isFolder(dst);
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
  const given = folderOptionGiven(flags);
  if (given) throw new UsageError(`--${given} is for a folder sync only (ssync sync SRC/ DST/)`);
  return false;
}

/** The device and inode of the folder `path` and of every folder above it, by ".." (not by name). */
function folderChain(path: string): { dev: bigint; ino: bigint }[] {
  const C = fs.constants;
  const chain: { dev: bigint; ino: bigint }[] = [];
  let fd = fs.openSync(path, C.O_RDONLY | C.O_DIRECTORY);
  try {
    for (;;) {
      const st = fs.fstatSync(fd, { bigint: true });
      chain.push({ dev: st.dev, ino: st.ino });
      const up = fs.openSync(`/proc/self/fd/${fd}/..`, C.O_RDONLY | C.O_DIRECTORY);
      const upSt = fs.fstatSync(up, { bigint: true });
      fs.closeSync(fd);
      fd = up;
      if (upSt.dev === st.dev && upSt.ino === st.ino) return chain; // "/" is its own parent
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The folder chain of `p`, or of its nearest existing folder when it does not exist yet. */
function chainOf(p: string): { dev: bigint; ino: bigint }[] {
  for (let at = nodePath.resolve(p);; at = nodePath.dirname(at)) {
    try {
      return folderChain(at);
    } catch (e) {
      if ((e as { code?: string }).code !== "ENOENT" || at === "/") throw e;
    }
  }
}

/**
 * SRC and DST must be apart: a DST inside SRC would be walked as source while it is filled,
 * and --delete into a DST that holds SRC would remove the source. Decided by device and inode
 * of the folders above each (whatever names, links, bind mounts or ".." lead there); a
 * bind mount of one inside the other is refused by the walks (tree-walk.ts `forbidden`).
 */
function refuseNested(src: string, dst: string): void {
  const s = chainOf(src);
  const d = chainOf(dst);
  const same = (a: { dev: bigint; ino: bigint }, b: { dev: bigint; ino: bigint }) => a.dev === b.dev && a.ino === b.ino;
  const dstExists = isFolder(dst) === true;
  if (dstExists && same(s[0], d[0])) throw new UsageError(`Cannot sync the folder ${src} into ${dst}: they are the same folder`);
  if (d.some((x) => same(x, s[0])) || (dstExists && s.some((x) => same(x, d[0])))) {
    throw new UsageError(`Cannot sync the folder ${src} into ${dst}: one is inside the other`);
  }
}

/**
 * A file of the tree under `root` opened as a listener opens a client's path under its root
 * (the same open policy: no link followed, nothing outside the root, a multiply linked file
 * never written), its messages told in a folder sync's words.
 */
export function folderOpener(root: string, o: { lockWaitMs: number; log: (m: string) => void }): (req: OpenRequest) => Promise<Storage> {
  let policy: OpenPolicy | undefined;
  return async (req: OpenRequest) => {
    policy ??= {
      root: fs.realpathSync(root),
      exports: new Map(),
      listenerReadOnly: false,
      keyReadOnly: false,
      pathPrefix: null,
      lockWaitMs: o.lockWaitMs,
      log: o.log,
    };
    try {
      return await openForClient(req, policy);
    } catch (e) {
      const err = e as { code?: string; message?: string };
      if (typeof err.message !== "string") throw e;
      const message = err.message.replaceAll("the listener's root", `the folder ${root}`).replaceAll("the listener", "a folder sync");
      throw err.code ? new ErrnoError(err.code, message, { cause: e }) : new Error(message, { cause: e });
    }
  };
}

/** Both trees' openers: the destination's made on first use (DST may not exist before). */
function treeOpener(roots: { src: string; dst: string }, o: { lockWaitMs: number; log: (m: string) => void }) {
  const source = folderOpener(roots.src, o);
  const destination = folderOpener(roots.dst, o);
  return (side: "source" | "destination", req: OpenRequest) => (side === "source" ? source(req) : destination(req));
}

function list(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v.map(String) : [String(v)];
}

/** The --include/--exclude rules of a folder command, in command-line order. */
export function folderFilter(flags: { include?: string | string[]; exclude?: string | string[] }, argv: readonly string[] = []): PathFilter {
  return new PathFilter(filterRules(argv, { include: list(flags.include), exclude: list(flags.exclude) }));
}

export async function runFolderSyncCommand(
  src: string,
  dst: string,
  flags: FolderFlags,
  hooks: SyncHooks & { argv?: readonly string[] } = {},
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
  const open = treeOpener({ src, dst }, { lockWaitMs: o.waitMs, log: say });
  try {
    const report = await syncTree(src, dst, {
      open,
      ...o,
      metadata: owner.wanted,
      pool,
      ffi: hooks.ffi,
      log: say,
      lockWaitMs: o.waitMs,
      signal: hooks.signal,
      progress,
      filter: folderFilter(flags, hooks.argv),
      delete: flags.delete === true,
      checksum: flags.checksum === true,
      note: (path, note) => say(`${path}: ${note}`),
      failed: (path, e, how) => console.error(`ssync: ${path}: ${describeError(how?.removal ? e : localSyncError(e, o.waitMs))}`),
      afterFile: o.verify && !o.dryRun
        ? (p) => {
          // Both re-read as they were written: through descriptors pinned from the roots.
          const [a, b] = [nodePath.join(src, p), nodePath.join(dst, p)];
          const read = (name: string) => open(name === a ? "source" : "destination", { name: p, mode: "pull", dryRun: true, inplace: false });
          return abortable(verifyIdentical(a, b, { ffi: hooks.ffi, open: read }), hooks.signal);
        }
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
