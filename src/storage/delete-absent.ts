/**
 * `--delete` of a folder sync: removes what the destination folder holds and the source
 * does not, once the files are synced.
 *
 * 1. The destination is walked (tree-walk.ts: no link followed, ssync's work files never
 *    listed, so never removed);
 * 2. an entry `keep` says to keep (the source has that name, or the filters exclude it) stays;
 *    a kept folder is entered only when the source's entry of that name is a folder too;
 * 3. an entry absent from the source is unlinked through its pinned parent (a link is removed,
 *    never followed); a folder absent from the source has its contents handled the same way
 *    and is then removed if empty (else kept, with a note: it holds excluded or work files);
 * 4. a file with a journal beside it is kept, with a note: a sync into it is running or was
 *    interrupted (ssync recover).
 * A dry run lists what would be removed and removes nothing.
 */
import fs from "node:fs";
import { storageError } from "./storage-error.ts";
import { type TreeEntryKind, walkTree } from "./tree-walk.ts";
import { workFilePath } from "./work-files.ts";

export interface DeleteAbsentOptions {
  /** What the source has at `path`: a kind, "excluded" (filters: kept, not entered), or undefined (absent). */
  sourceHas: (path: string, kind: TreeEntryKind) => TreeEntryKind | "excluded" | undefined;
  dryRun: boolean;
  /** Told each entry removed (a dry run: that would be). */
  removed: (path: string, kind: TreeEntryKind) => void;
  /** Told each absent entry kept, and why. */
  note: (path: string, note: string) => void;
}

export function deleteAbsent(root: string, o: DeleteAbsentOptions): void {
  /** Folders absent from the source, currently entered: all below them is absent too. */
  const absent = new Set<string>();
  /** Kept folders not to enter (the source has no folder of that name). */
  const closed = new Set<string>();
  for (const e of walkTree(root, { descend: (p) => !closed.has(p) })) {
    if (e.leave) {
      closed.delete(e.path);
      if (!absent.delete(e.path)) continue;
      if (o.dryRun) {
        o.removed(e.path, e.kind);
        continue;
      }
      try {
        fs.rmdirSync(e.at);
        o.removed(e.path, e.kind);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === "ENOTEMPTY" || code === "EEXIST") o.note(e.path, "folder kept: it still holds excluded files or ssync's work files");
        else throw storageError("remove", `${root}/${e.path}`, { cause: err });
      }
      continue;
    }
    const has = o.sourceHas(e.path, e.kind);
    if (has === "excluded") {
      if (e.kind === "folder") closed.add(e.path);
      continue;
    }
    if (has !== undefined) {
      if (e.kind === "folder" && has !== "folder") closed.add(e.path);
      continue;
    }
    if (e.kind === "folder") {
      absent.add(e.path);
      continue;
    }
    const name = e.path.slice(e.path.lastIndexOf("/") + 1);
    if (e.kind === "file" && exists(workFilePath(e.at.slice(0, e.at.lastIndexOf("/")), name, "journal"))) {
      o.note(e.path, "kept: a sync into it is running or was interrupted (its journal is beside it; see ssync recover)");
      continue;
    }
    if (!o.dryRun) {
      try {
        fs.unlinkSync(e.at);
      } catch (err) {
        throw storageError("remove", `${root}/${e.path}`, { cause: err });
      }
    }
    o.removed(e.path, e.kind);
  }
}

function exists(path: string): boolean {
  try {
    fs.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
