/**
 * What a journal left by an interrupted sync means, and what is done with it.
 *
 * - `recoverJournal` (a writer, holding the destination's lock, so no sync that could own the
 *   journal is alive): a journal whose COMMIT checks and that belongs to this destination is
 *   applied again (the sync had committed: the destination becomes its new image), then
 *   removed; an uncommitted one is removed (the destination never changed: it is the old
 *   image). Refused, and kept for a person to look at: a journal this user did not write
 *   (another owner, group or world access, other links: anyone who can make files in the
 *   folder could otherwise have their own "journal" applied), and a committed journal of
 *   another file (inode) or device (identity, size) — never applied, never thrown away.
 * - `checkReadable` (a reader, holding no lock): only a committed journal means the
 *   destination may be half-applied; the reader waits up to `waitMs` for it to go (a live
 *   writer finishing its commit), else is refused. An uncommitted journal is harmless: the
 *   destination is still its old image.
 */
import { Buffer } from "node:buffer";
import fs from "node:fs";
import nodePath from "node:path";
import process from "node:process";
import { ErrnoError } from "../util/errors.ts";
import { applyRecords, type ApplyTarget, readJournal, RecordType } from "./journal-file.ts";
import { syncDirectory } from "./journaled-storage.ts";
import type { StorageKind } from "./storage.ts";
import { StorageError, storageError } from "./storage-error.ts";

export interface Recovered {
  readonly action: "completed" | "rolled back" | "removed";
  /** One line for the log: what was found and done. */
  readonly message: string;
}

export interface RecoverTarget extends ApplyTarget {
  readonly path: string;
  readonly kind: StorageKind;
  readonly size: number;
  sync(): Promise<void>;
}

function openJournal(path: string): number | undefined {
  try {
    // O_NONBLOCK: a FIFO put at the name must not hang us (it is refused below, not a regular file).
    return fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return undefined;
    throw e;
  }
}

/** See above. Returns what was done, or undefined when there was no journal. */
export async function recoverJournal(
  target: RecoverTarget,
  o: { journalPath: string; journalDir: string; stat: { ino: bigint }; deviceId?: string },
): Promise<Recovered | undefined> {
  let fd: number | undefined;
  try {
    fd = openJournal(o.journalPath);
  } catch (e) {
    throw storageError("recover", target.path, { cause: e, reason: `cannot read its journal ${o.journalPath}: ${(e as Error).message}` });
  }
  if (fd === undefined) return undefined;
  let result: Recovered;
  try {
    const st = fs.fstatSync(fd);
    const euid = process.geteuid?.();
    const shown = nodePath.basename(o.journalPath);
    if (!st.isFile() || st.nlink !== 1 || (euid !== undefined && st.uid !== euid) || (st.mode & 0o077) !== 0) {
      throw storageError("open", target.path, {
        code: "EEXIST",
        reason: `${shown} (${target.kind === "file" ? "beside it" : `in ${o.journalDir}`}) is not a journal ssync wrote ` +
          `as this user (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}, ${st.nlink} links), so it is ` +
          `neither applied nor removed: recover as its owner, or remove it to keep ${target.path} as it is now`,
      });
    }
    const state = await readJournal(fd);
    const begun = state.header ? ` begun ${state.header.created} by pid ${state.header.pid}` : "";
    if (state.committed) {
      const h = state.header;
      const other = h.kind !== target.kind
        ? `a ${h.kind}`
        : target.kind === "file"
        ? (h.ino !== String(o.stat.ino) ? `inode ${h.ino}, not ${o.stat.ino}` : undefined)
        : h.deviceId !== o.deviceId
        ? `device ${h.deviceId ?? "(unnamed)"}, not ${o.deviceId ?? "(unnamed)"}`
        : h.sizeBefore !== target.size
        ? `a device of ${h.sizeBefore} bytes, not ${target.size}`
        : undefined;
      if (other !== undefined) {
        throw storageError("open", target.path, {
          code: "EEXIST",
          reason: `${shown} (${target.kind === "file" ? "beside it" : `in ${o.journalDir}`}) holds a committed sync ` +
            `begun ${h.created} into another ${target.kind === "file" ? "file" : "device"} (${other}), so it is neither ` +
            `applied nor removed: if ${target.path} was replaced on purpose, remove it to keep ${target.path} as it is now`,
        });
      }
      await applyRecords(fd, state.records(), target, "recover");
      await target.sync();
      result = { action: "completed", message: `completed an interrupted sync of ${target.path} (sync${begun}): it is the new image` };
    } else if (state.header) {
      result = { action: "rolled back", message: `rolled back an interrupted sync of ${target.path} (sync${begun}): it is the image it was before that sync` };
    } else {
      result = { action: "removed", message: `removed ${o.journalPath}: ${state.why}; ${target.path} is unchanged` };
    }
  } catch (e) {
    if (e instanceof StorageError) throw e;
    throw storageError("recover", target.path, { cause: e, reason: `cannot apply its journal ${o.journalPath}: ${(e as Error).message}` });
  } finally {
    fs.closeSync(fd);
  }
  fs.unlinkSync(o.journalPath);
  await syncDirectory(o.journalDir);
  return result;
}

/** True when the journal on `fd` is committed (a quick look at its tail first: most are not). */
async function isCommitted(fd: number): Promise<boolean> {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) return false; // not a journal of ours; the next writer refuses it
  const size = Number(st.size);
  if (size < 64) return false;
  const tail = Buffer.alloc(64);
  if (fs.readSync(fd, tail, 0, 64, size - 64) < 64) return false;
  if (tail.readUInt32LE(0) !== RecordType.COMMIT || Number(tail.readBigUInt64LE(16)) !== size - 64) return false;
  return (await readJournal(fd)).committed;
}

const POLL_MS = 50;

/** See above: resolves once no committed journal lies at `journalPath`. */
export async function checkReadable(path: string, o: { journalPath: string; waitMs: number }): Promise<void> {
  const deadline = Date.now() + o.waitMs;
  for (;;) {
    const fd = openJournal(o.journalPath);
    if (fd === undefined) return;
    let committed: boolean;
    try {
      committed = await isCommitted(fd);
    } finally {
      fs.closeSync(fd);
    }
    if (!committed) return;
    if (Date.now() >= deadline) {
      throw new ErrnoError(
        "EBUSY",
        `Cannot read ${path}: a sync into it is being committed, or was interrupted while committing; ` +
          `wait for it, or complete it with ssync recover ${path} (or any sync into it)`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}
