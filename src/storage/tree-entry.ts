/**
 * One entry of a folder tree as a folder sync sees it: plain data (no descriptor, no class),
 * so that the planner (session/tree-plan.ts) takes a local walk's list and, later, a list a
 * listener sent (protocol 2's LIST) alike.
 *
 * Invariants: `path` is relative to the tree's root, "/"-separated, never "", never holds "",
 * "." or ".." components; `size` is 0 for anything but a file; the fields marked local are
 * absent from a list that crossed the wire, and the planner then does without them.
 */

export type TreeEntryKind = "file" | "folder" | "symlink" | "block-device" | "other";

export const TREE_ENTRY_KINDS: readonly TreeEntryKind[] = ["file", "folder", "symlink", "block-device", "other"];

/** The most entries a folder sync lists on one side (README, --help): more is refused (E2BIG). */
export const MAX_TREE_ENTRIES = 1_000_000;

export interface TreeEntry {
  readonly path: string;
  readonly kind: TreeEntryKind;
  /** Bytes (a file's apparent size); 0 for other kinds. */
  readonly size: number;
  /** Modification time, ns since the epoch. */
  readonly mtimeNs: bigint;
  /** Local: st_mode's permission bits, owner and group. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** Local: device and inode (the source is opened only if it is still this file). */
  readonly dev?: bigint;
  readonly ino?: bigint;
  /** ssync's journal or partial file lies beside it: a sync into it is running or was cut off. */
  readonly pending?: boolean;
  /**
   * It is there but could not be read: its lstat failed (kind "other"), or, a folder, its
   * listing did (nothing below it is listed). Never taken for "absent".
   */
  readonly error?: { readonly code: string; readonly message: string };
}
