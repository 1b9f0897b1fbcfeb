/**
 * What a folder sync does, decided from the two sides' entry lists alone (tree-entry.ts):
 * pure, no disk, no clock, so that a local sync (tree-sync.ts) and a network one (entries a
 * listener sent by LIST) share it.
 *
 * 1. Source pass, in the source list's order (pre-order: a folder before its contents):
 *    excluded entries (PathFilter: first rule wins; an excluded folder's contents are never
 *    looked at) are counted and left alone; each folder the destination lacks is made
 *    ("mkdir"); each file is synced ("sync", with why), skipped by the quick check (size and
 *    mtime to the ns equal, no work file beside the destination's, and the attributes wanted
 *    equal), or failed when the destination has something else in its place (a folder, a
 *    symbolic link, an entry it could not read) or a folder on its way is not a folder there;
 *    other kinds are skipped with a note.
 * 2. Delete pass (`delete`), over the destination list backwards (contents before their
 *    folder): an entry absent from the source is removed ("delete": the entry itself, a link
 *    never followed), unless excluded, pending (a journal beside it) or unreadable ("keep",
 *    with a note); a folder absent from the source is removed ("rmdir") only when everything
 *    below it is removed too. Nothing is removed below a folder the source could not list or
 *    has as something else than a folder.
 *
 * Both lists must be in pre-order (each folder before its contents; tree-walk.ts's order, and
 * LIST's), each path once. Entries without the local fields (mode, owner, pending: a list that
 * crossed the wire) are planned without them: no attribute check, no pending check.
 *
 * Invariants: an entry with an `error` is never taken for absent; "delete"/"rmdir" name only
 * destination entries absent from the source, not excluded, with every folder above them
 * either present in both as readable folders or absent from the source itself; the executor
 * runs the delete actions only when no file failed (rsync skips deletion after an I/O error).
 */
import type { TreeEntry, TreeEntryKind } from "../storage/tree-entry.ts";

export type SyncReason = "new" | "size" | "mtime" | "attributes" | "pending" | "checksum";

export interface EntryError {
  readonly code: string;
  readonly message: string;
}

export type TreeAction =
  | { readonly type: "mkdir"; readonly path: string; readonly mode?: number }
  | {
    readonly type: "sync";
    readonly path: string;
    readonly size: number;
    readonly reason: SyncReason;
    /** Its folder is missing on the destination before this plan's mkdirs (a dry run cannot open it). */
    readonly newFolder: boolean;
    readonly source: TreeEntry;
  }
  | { readonly type: "quick-check"; readonly path: string; readonly size: number }
  | { readonly type: "skip"; readonly path: string; readonly kind: TreeEntryKind; readonly note: string }
  | { readonly type: "fail"; readonly path: string; readonly size: number; readonly side: "source" | "destination"; readonly error: EntryError }
  | { readonly type: "delete"; readonly path: string; readonly kind: TreeEntryKind }
  | { readonly type: "rmdir"; readonly path: string }
  | { readonly type: "keep"; readonly path: string; readonly note: string };

export interface TreePlanTotals {
  /** Files considered (synced, quick check, failed) and their bytes: the progress line's set. */
  files: number;
  bytes: number;
  sync: number;
  quickCheck: number;
  skipped: number;
  /** Entries left out by the filter (files and folders; a folder's contents are not counted). */
  excluded: number;
  failed: number;
  mkdir: number;
  /** "delete" and "rmdir" actions. */
  delete: number;
  kept: number;
}

export interface TreePlan {
  readonly actions: TreeAction[];
  readonly totals: TreePlanTotals;
}

export interface PlanOptions {
  /** --checksum: no quick check, every file compared. */
  checksum: boolean;
  delete: boolean;
  filter: { excludes(path: string, o: { folder?: boolean }): boolean };
  /** The sync sets the mode: the quick check also wants `destinationMode(source mode)` on the destination. */
  perms?: { destinationMode: (mode: number) => number };
  /** The sync sets owner and group: the quick check also wants them equal. */
  owner?: boolean;
  /** The destination's root folder is not there yet (a dry run's): every file is in a new folder. */
  destinationMissing?: boolean;
}

export const SKIP_NOTES: Record<Exclude<TreeEntryKind, "file" | "folder">, string> = {
  symlink: "a symbolic link: skipped, never followed nor recreated",
  "block-device": "a block device: skipped inside a folder (sync it by name)",
  other: "not a regular file (a fifo, socket or character device): skipped",
};

function parentOf(path: string): string {
  const at = path.lastIndexOf("/");
  return at < 0 ? "" : path.slice(0, at);
}

interface Blocked {
  readonly code: string;
  readonly reason: string;
}

export function planTree(source: readonly TreeEntry[], destination: readonly TreeEntry[], o: PlanOptions): TreePlan {
  const actions: TreeAction[] = [];
  const totals: TreePlanTotals = { files: 0, bytes: 0, sync: 0, quickCheck: 0, skipped: 0, excluded: 0, failed: 0, mkdir: 0, delete: 0, kept: 0 };
  const dst = new Map(destination.map((d) => [d.path, d]));
  const src = new Map(source.map((s) => [s.path, s]));
  /** Source folders excluded (or below one): nothing under them is looked at. */
  const excluded = new Set<string>();
  /** Source folders whose destination cannot take files: why. */
  const blocked = new Map<string, Blocked>();
  /** Source folders missing on the destination (made by this plan). */
  const made = new Set<string>(o.destinationMissing ? [""] : []);

  for (const e of source) {
    const parent = parentOf(e.path);
    const folder = e.kind === "folder";
    if (excluded.has(parent)) {
      if (folder) excluded.add(e.path);
      continue;
    }
    if (o.filter.excludes(e.path, { folder })) {
      if (folder) excluded.add(e.path);
      totals.excluded++;
      continue;
    }
    if (e.kind !== "file" && e.kind !== "folder") {
      actions.push({ type: "skip", path: e.path, kind: e.kind, note: SKIP_NOTES[e.kind] });
      totals.skipped++;
      continue;
    }
    const inBlocked = blocked.get(parent);
    if (folder) {
      if (e.error !== undefined) {
        // Unreadable on the source: a failure (so nothing is deleted), nothing below it synced.
        actions.push({ type: "fail", path: e.path, size: 0, side: "source", error: e.error });
        totals.failed++;
        blocked.set(e.path, { code: e.error.code, reason: e.error.message });
        continue;
      }
      if (inBlocked !== undefined) {
        blocked.set(e.path, inBlocked);
        continue;
      }
      const d = dst.get(e.path);
      if (d === undefined) {
        actions.push({ type: "mkdir", path: e.path, mode: e.mode });
        totals.mkdir++;
        made.add(e.path);
      } else if (d.error !== undefined) {
        blocked.set(e.path, { code: d.error.code, reason: d.error.message });
      } else if (d.kind === "symlink") {
        blocked.set(e.path, { code: "ELOOP", reason: `${e.path} is a symbolic link in the destination, which a folder sync never follows` });
      } else if (d.kind !== "folder") {
        blocked.set(e.path, { code: "ENOTDIR", reason: `${e.path} is not a folder in the destination (something else is in the way)` });
      }
      continue;
    }
    totals.files++;
    totals.bytes += e.size;
    const fail = (side: "source" | "destination", error: EntryError) => {
      actions.push({ type: "fail", path: e.path, size: e.size, side, error });
      totals.failed++;
    };
    if (e.error !== undefined) {
      fail("source", e.error);
      continue;
    }
    if (inBlocked !== undefined) {
      fail("destination", { code: inBlocked.code, message: `Cannot sync ${e.path}: ${inBlocked.reason}` });
      continue;
    }
    const d = dst.get(e.path);
    const sync = (reason: SyncReason) => {
      actions.push({ type: "sync", path: e.path, size: e.size, reason, newFolder: made.has(parent), source: e });
      totals.sync++;
    };
    if (d === undefined) sync("new");
    else if (d.error !== undefined) fail("destination", d.error);
    else if (d.kind === "folder") fail("destination", { code: "EISDIR", message: `Cannot sync ${e.path}: a folder is in its place in the destination` });
    else if (d.kind === "symlink") {
      fail("destination", { code: "ELOOP", message: `Cannot sync ${e.path}: a symbolic link is in its place in the destination (never followed nor replaced)` });
    } else if (d.kind !== "file") fail("destination", { code: "EINVAL", message: `Cannot sync ${e.path}: the destination's is not a regular file` });
    else if (o.checksum) sync("checksum");
    else if (d.pending === true) sync("pending");
    else if (d.size !== e.size) sync("size");
    else if (d.mtimeNs !== e.mtimeNs) sync("mtime");
    else if (!sameAttributes(e, d, o)) sync("attributes");
    else {
      actions.push({ type: "quick-check", path: e.path, size: e.size });
      totals.quickCheck++;
    }
  }

  if (o.delete) planDeletes(destination, { src, actions, totals, o });
  return { actions, totals };
}

function sameAttributes(s: TreeEntry, d: TreeEntry, o: PlanOptions): boolean {
  if (o.perms && s.mode !== undefined && d.mode !== undefined && o.perms.destinationMode(s.mode) !== (d.mode & 0o777)) return false;
  if (o.owner && (s.uid !== d.uid || s.gid !== d.gid)) return false;
  return true;
}

type DeleteStatus =
  /** In both, both readable folders: its contents are looked at. */
  | "present"
  /** Absent from the source, to be removed (a folder: if emptied). */
  | "absent"
  /** Left alone, contents too (in the source as something else, excluded, below such). */
  | "untouched";

function planDeletes(
  destination: readonly TreeEntry[],
  c: { src: Map<string, TreeEntry>; actions: TreeAction[]; totals: TreePlanTotals; o: PlanOptions },
): void {
  const status = new Map<string, DeleteStatus>();
  const statusOf = (folder: string): DeleteStatus => folder === "" ? "present" : status.get(folder) ?? "untouched";
  const keepNote = new Map<string, string>();
  for (const d of destination) {
    const up = statusOf(parentOf(d.path));
    const folder = d.kind === "folder";
    let st: DeleteStatus;
    if (up === "untouched") st = "untouched";
    else if (c.o.filter.excludes(d.path, { folder })) st = "untouched";
    else if (up === "present" && c.src.has(d.path)) {
      const s = c.src.get(d.path)!;
      st = folder && s.kind === "folder" && s.error === undefined && d.error === undefined ? "present" : "untouched";
    } else if (d.error !== undefined) {
      st = "untouched";
      keepNote.set(d.path, `kept: it could not be read (${d.error.message})`);
    } else if (d.pending === true) {
      st = "untouched";
      keepNote.set(d.path, "kept: a sync into it is running or was interrupted (its journal is beside it; see ssync recover)");
    } else st = "absent";
    status.set(d.path, st);
  }
  /** Folders holding something that stays. */
  const notEmpty = new Set<string>();
  const markUp = (path: string) => {
    for (let p = parentOf(path); p !== "" && !notEmpty.has(p); p = parentOf(p)) notEmpty.add(p);
  };
  for (let i = destination.length - 1; i >= 0; i--) {
    const d = destination[i];
    const st = status.get(d.path)!;
    if (st !== "absent") {
      markUp(d.path);
      const note = keepNote.get(d.path);
      if (note !== undefined) {
        c.actions.push({ type: "keep", path: d.path, note });
        c.totals.kept++;
      }
      continue;
    }
    if (d.kind !== "folder") {
      c.actions.push({ type: "delete", path: d.path, kind: d.kind });
      c.totals.delete++;
    } else if (notEmpty.has(d.path)) {
      markUp(d.path);
      c.actions.push({ type: "keep", path: d.path, note: "folder kept: it still holds what is not deleted (excluded, pending or unreadable entries)" });
      c.totals.kept++;
    } else {
      c.actions.push({ type: "rmdir", path: d.path });
      c.totals.delete++;
    }
  }
}
