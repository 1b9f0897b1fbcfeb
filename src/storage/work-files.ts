/**
 * Where ssync keeps its own files for a destination, and how they are named.
 *
 * - A file's redo journal lies beside it: `DIR/.NAME.ssync-journal`; a new file is written as
 *   `DIR/.NAME.ssync-partial` until it is renamed over NAME. Same folder, so the rename is
 *   atomic and the journal is on the same filesystem.
 * - A block device's journal lies in the state folder: `$XDG_STATE_HOME/ssync/journals/`
 *   (when absolute, else `~/.local/state/ssync/journals/`), named after the device's path.
 * - A name too long for the suffix falls back to `.ssync-<kind>-<hash of NAME>`.
 * - Clients of a listener can never open these names (isWorkFileName).
 */
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import nodePath from "node:path";
import process from "node:process";
import { Buffer } from "node:buffer";

const NAME_MAX = 255;

export type WorkFileKind = "journal" | "partial";

function workName(base: string, kind: WorkFileKind): string {
  const name = `.${base}.ssync-${kind}`;
  if (Buffer.byteLength(name) <= NAME_MAX) return name;
  return `.ssync-${kind}-${createHash("sha256").update(base).digest("hex").slice(0, 32)}`;
}

/** The work file of kind `kind` for the file `base` in `dir` (a path, or /proc/self/fd/N). */
export function workFilePath(dir: string, base: string, kind: WorkFileKind): string {
  return nodePath.join(dir, workName(base, kind));
}

/** The work file beside `path`. */
export function workFileBeside(path: string, kind: WorkFileKind): string {
  const abs = nodePath.resolve(path);
  return workFilePath(nodePath.dirname(abs), nodePath.basename(abs), kind);
}

/** True for a name ssync uses for its own files (journals, partial files, lock files). */
export function isWorkFileName(base: string): boolean {
  return /^\..*\.ssync-(journal|partial)$/.test(base) || /^\.ssync-(journal|partial)-[0-9a-f]{32}$/.test(base) ||
    base.endsWith(".ssync-lock");
}

/** The folder for block devices' journals (created when the first journal is made). */
export function stateJournalDir(env: Record<string, string | undefined> = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  if (xdg && nodePath.isAbsolute(xdg)) return nodePath.join(xdg, "ssync", "journals");
  const home = env.HOME ?? homedir();
  return nodePath.join(home, ".local", "state", "ssync", "journals");
}

/** The journal of the block device at `path` (as given: /dev/vg/lv survives a reboot, dm-3 may not). */
export function deviceJournalPath(dir: string, path: string): string {
  const abs = nodePath.resolve(path);
  const tag = nodePath.basename(abs).replace(/[^A-Za-z0-9._-]/g, "_");
  return nodePath.join(dir, `${tag}-${createHash("sha256").update(abs).digest("hex").slice(0, 16)}.journal`);
}
