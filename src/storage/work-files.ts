/**
 * Where ssync keeps its own files for a destination, and how they are named.
 *
 * - A file's redo journal lies beside it: `DIR/.NAME.ssync-journal`; a new file is written as
 *   `DIR/.NAME.ssync-partial` until it is renamed over NAME. Same folder, so the rename is
 *   atomic and the journal is on the same filesystem.
 * - A block device's journal lies in the state folder (stateJournalDir), named after the
 *   device's identity (device-identity.ts) or, without one, its path.
 * - A name too long for the suffix falls back to `.ssync-<kind>-<hash of NAME>`.
 * - Clients of a listener can never open these names (isWorkFileName).
 */
import { createHash } from "node:crypto";
import { homedir } from "node:os";
import nodePath from "node:path";
import process from "node:process";
import { Buffer } from "node:buffer";
import { deviceIdentity } from "./device-identity.ts";

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

/** The names are the protocol's (spec §8): no peer may name one. */
export { isWorkFileName } from "../../protocol/work-file-names.ts";

/**
 * The folder for block devices' journals (created when the first journal is made):
 * $XDG_STATE_HOME/ssync/journals when set and absolute; else, for root, /var/lib/ssync/journals
 * (one place whatever HOME `sudo` leaves); else ~/.local/state/ssync/journals.
 */
export function stateJournalDir(env: Record<string, string | undefined> = process.env): string {
  const xdg = env.XDG_STATE_HOME;
  if (xdg && nodePath.isAbsolute(xdg)) return nodePath.join(xdg, "ssync", "journals");
  if (process.geteuid?.() === 0) return "/var/lib/ssync/journals";
  const home = env.HOME ?? homedir();
  return nodePath.join(home, ".local", "state", "ssync", "journals");
}

/**
 * The journal of the block device at `path`: named after its identity (device-identity.ts)
 * when it has one, else after the path as given (/dev/vg/lv survives a reboot, dm-3 may not).
 */
export function deviceJournalPath(dir: string, path: string, identity?: string): string {
  const hash = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 32);
  // With an identity, nothing of the name that reached the device: one device, one journal.
  if (identity !== undefined) return nodePath.join(dir, `device-${hash(identity)}.journal`);
  const abs = nodePath.resolve(path);
  return nodePath.join(dir, `${nodePath.basename(abs).replace(/[^A-Za-z0-9._-]/g, "_")}-${hash(abs)}.journal`);
}

/** Where the journal of `path` lies (beside a file; in `journalDir` for a block device), and the device's identity. */
export function journalOf(
  path: string,
  o: { kind: "file" | "block-device"; rdev: bigint; journalDir?: string },
): { path: string; deviceId?: string } {
  if (o.kind === "file") return { path: workFileBeside(path, "journal") };
  const deviceId = deviceIdentity(o.rdev);
  return { path: deviceJournalPath(o.journalDir ?? stateJournalDir(), path, deviceId), deviceId };
}

/**
 * Why a partial file found on disk is not one this user's ssync made (so it is not resumed:
 * its owner could change it after the rename), or undefined when it is.
 */
export function foreignWorkFile(st: { isFile(): boolean; nlink: number | bigint; uid: number | bigint }): string | undefined {
  const euid = process.geteuid?.();
  if (!st.isFile()) return "it is not a regular file";
  if (Number(st.nlink) !== 1) return `it has ${st.nlink} links`;
  if (euid !== undefined && Number(st.uid) !== euid) return `it belongs to uid ${st.uid}`;
  return undefined;
}
