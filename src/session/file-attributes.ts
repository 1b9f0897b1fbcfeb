/**
 * File metadata in a session (spec §3 METADATA, §5.9): what the client asks for, what a
 * server grants, what the destination takes at commit, and what changed, for the summary.
 *
 * Invariants:
 * - Only regular files carry or take metadata; a block device on either side takes and gives
 *   none (a note says so), and neither does a listener's export (its admin named the path: its
 *   mode and mtime are the admin's).
 * - A source's mode travels whole (≤ 0o7777); only the destination masks it, with its own
 *   umask (storage/file-metadata.ts destinationMode), so a hostile peer's setuid bit or o+w is
 *   never applied. A push's report of a changed mode assumes the listener's umask is this
 *   process's (exact for `ssync sync`): OPEN_OK carries the destination's mode, not its umask.
 * - The mtime is the one the source had when it was stamped for the sync (SourceWatch): a
 *   source that changes later fails the sync anyway.
 */
import type { FileAttributes } from "../../protocol/messages.ts";
import type { FileStamp } from "../storage/file-stamp.ts";
import { destinationMode } from "../storage/file-metadata.ts";
import type { Storage } from "../storage/storage.ts";
import { stampOf } from "./source-watch.ts";

/** Which attributes the user wants the destination to take (--no-perms, --no-times, --owner). */
export interface MetadataWanted {
  perms: boolean;
  times: boolean;
  owner: boolean;
}

export type MetadataAttribute = "mode" | "mtime" | "owner";

export interface MetadataReport {
  /** What the destination took (a dry run: would take). */
  applied: MetadataAttribute[];
  /** Those of them whose value the destination did not have already. */
  changed: MetadataAttribute[];
  /** Why something wanted was not applied. */
  notes: string[];
}

export function wantsAny(w: MetadataWanted | undefined): w is MetadataWanted {
  return w !== undefined && (w.perms || w.times || w.owner);
}

/** The attributes of a file's stamp, all of them, or those `w` names. */
export function attributesOf(s: FileStamp, w: MetadataWanted = { perms: true, times: true, owner: true }): FileAttributes {
  return {
    ...(w.perms ? { mode: s.mode } : {}),
    ...(w.times ? { mtimeNs: s.mtimeNs } : {}),
    ...(w.owner ? { owner: { uid: s.uid, gid: s.gid } } : {}),
  };
}

/** The attributes of `a` that `keep` has too (keep's values are ignored). */
export function restrict(a: FileAttributes, keep: FileAttributes): FileAttributes {
  return {
    ...(keep.mode !== undefined && a.mode !== undefined ? { mode: a.mode } : {}),
    ...(keep.mtimeNs !== undefined && a.mtimeNs !== undefined ? { mtimeNs: a.mtimeNs } : {}),
    ...(keep.owner && a.owner ? { owner: a.owner } : {}),
  };
}

/** A store's current attributes; undefined when it has no descriptor (a dry run's missing file). */
export async function currentAttributes(store: Storage): Promise<FileAttributes | undefined> {
  if (store.kind !== "file") return undefined;
  try {
    return attributesOf(await stampOf(store));
  } catch {
    return undefined;
  }
}

/**
 * What a destination whose attributes are `before` (undefined: it does not exist yet) reports
 * when it takes `source`'s: the attributes applied, and which of them change its value.
 */
export function compareAttributes(source: FileAttributes, before: FileAttributes | undefined): Pick<MetadataReport, "applied" | "changed"> {
  const applied: MetadataAttribute[] = [];
  const changed: MetadataAttribute[] = [];
  if (source.mode !== undefined) {
    applied.push("mode");
    if (before?.mode === undefined || destinationMode(source.mode) !== before.mode) changed.push("mode");
  }
  if (source.mtimeNs !== undefined) {
    applied.push("mtime");
    if (before?.mtimeNs !== source.mtimeNs) changed.push("mtime");
  }
  if (source.owner) {
    applied.push("owner");
    if (before?.owner?.uid !== source.owner.uid || before?.owner?.gid !== source.owner.gid) changed.push("owner");
  }
  return { applied, changed };
}

export const BLOCK_DEVICE_METADATA_NOTE = "a block device's mode, times and owner are never touched";

export const EXPORT_METADATA_NOTE = "mode and mtime not applied: the listener grants none for this file (an export keeps the ones its admin gave it)";
