/**
 * `ssync sync SRC/ DST/`: the local executor of a folder sync. Each file is synced by syncLocal
 * (the single-file sync: exact, sparse, journaled, root hash), one after the other on the
 * caller's one WorkerPool.
 *
 * 1. list: both trees are walked (storage/tree-walk.ts: no link followed, excluded folders not
 *    entered, a folder that is the other root refused) into entry lists, the destination's
 *    only if it exists;
 * 2. plan: session/tree-plan.ts decides every action from the two lists alone;
 * 3. execute: tree-execute.ts, with this side's operations: folders made under DST
 *    (storage/tree-folder.ts), files synced through `open` (descriptors pinned from the roots:
 *    nothing is opened through a link), removals under DST.
 *
 * Invariants: nothing outside SRC is read, nothing outside DST written or removed; a dry run
 * makes, writes and removes nothing.
 */
import fs from "node:fs";
import nodePath from "node:path";
import type { Storage } from "../storage/storage.ts";
import { MAX_TREE_ENTRIES, type TreeEntry } from "../storage/tree-entry.ts";
import { makeFolderUnder, removeUnder } from "../storage/tree-folder.ts";
import { type WalkCounters, walkTree } from "../storage/tree-walk.ts";
import { UsageError } from "../util/errors.ts";
import type { PathFilter } from "../util/path-filter.ts";
import { type LocalSyncOptions, syncLocal } from "./local-sync.ts";
import type { OpenRequest } from "./server-session.ts";
import { planTree } from "./tree-plan.ts";
import { emptyTreeReport, executeTreePlan, type TreeExecuteOptions, type TreeReport, type TreeSides } from "./tree-execute.ts";
import { destinationMode } from "../storage/file-metadata.ts";

export interface TreeSyncOptions extends Omit<LocalSyncOptions, "progress" | "openSource" | "openDestination">, TreeExecuteOptions {
  filter: PathFilter;
  /** --delete: remove what the destination has and the source does not. */
  delete: boolean;
  /** --checksum: compare every file, no quick check. */
  checksum: boolean;
  /** Opens the file `req.name` of one side, never through a link (the CLI's: rooted at SRC or DST). */
  open: (side: "source" | "destination", req: OpenRequest) => Promise<Storage>;
  /** Default MAX_TREE_ENTRIES per side. */
  maxEntries?: number;
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

/** Step 1 for one local tree: its entries; what the walk left out goes to the report's skipped. */
export async function listLocalTree(
  root: string,
  o: { other?: { dev: bigint; ino: bigint }; otherName: string; t: Pick<TreeSyncOptions, "signal" | "maxEntries" | "filter" | "note">; report: TreeReport },
): Promise<TreeEntry[]> {
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
  const report = emptyTreeReport(o.dryRun);
  const srcId = identity(src);
  const dstId = identity(dst);
  const source = await listLocalTree(src, { other: dstId, otherName: `the destination ${dst}`, t: o, report });
  const destination = dstId === undefined ? [] : await listLocalTree(dst, { other: srcId, otherName: `the source ${src}`, t: o, report });
  const plan = planTree(source, destination, {
    checksum: o.checksum,
    delete: o.delete,
    filter: o.filter,
    perms: o.metadata?.perms === true ? { destinationMode } : undefined,
    owner: o.metadata?.owner === true,
    destinationMissing: dstId === undefined,
  });
  const sides: TreeSides = {
    concurrency: 1,
    mkdir: (path, mode) => Promise.resolve(makeFolderUnder(dst, path, { mode })),
    sync: (a, progress) =>
      syncLocal(a.path, a.path, {
        ...o,
        progress,
        openSource: () => o.open("source", { name: a.path, mode: "pull", dryRun: o.dryRun, inplace: false }),
        openDestination: (req) => o.open("destination", { ...req, name: a.path, mode: "push" }),
      }),
    remove: (path, kind) => Promise.resolve(removeUnder(dst, path, kind)),
  };
  report.seconds = (performance.now() - started) / 1000;
  await executeTreePlan(plan, sides, report, o);
  return report;
}
