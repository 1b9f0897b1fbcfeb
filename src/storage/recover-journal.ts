/**
 * What a journal left by an interrupted sync means, and what is done with it.
 *
 * - `recoverJournal` (a writer, holding the destination's lock, so no sync that could own the
 *   journal is alive): a journal whose COMMIT checks and that belongs to this destination is
 *   applied again (the sync had committed: the destination becomes its new image), then
 *   removed; any other journal is removed (the destination never changed: it is the old image).
 * - `checkReadable` (a reader, holding no lock): only a committed journal means the
 *   destination may be half-applied; the reader waits up to `waitMs` for it to go (a live
 *   writer finishing its commit), else is refused. An uncommitted journal is harmless: the
 *   destination is still its old image.
 */
import { Buffer } from "node:buffer";
import fs from "node:fs";
import { ErrnoError } from "../util/errors.ts";
import { applyRecords, type ApplyTarget, readJournal, RecordType } from "./journal-file.ts";
import { syncDirectory } from "./journaled-storage.ts";
import type { StorageKind } from "./storage.ts";
import { storageError } from "./storage-error.ts";

export interface Recovered {
  readonly action: "completed" | "rolled back" | "removed";
  /** One line for the log: what was found and done. */
  readonly message: string;
}

export interface RecoverTarget extends ApplyTarget {
  readonly path: string;
  readonly kind: StorageKind;
  sync(): Promise<void>;
}

function openJournal(path: string): number | undefined {
  try {
    return fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT") return undefined;
    throw e;
  }
}

/** See above. Returns what was done, or undefined when there was no journal. */
export async function recoverJournal(
  target: RecoverTarget,
  o: { journalPath: string; journalDir: string; stat: { dev: bigint; ino: bigint } },
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
    const state = await readJournal(fd);
    const begun = state.header ? ` begun ${state.header.created} by pid ${state.header.pid}` : "";
    const ours = state.header !== undefined && state.header.kind === target.kind &&
      (target.kind === "block-device" || (state.header.dev === String(o.stat.dev) && state.header.ino === String(o.stat.ino)));
    if (state.committed && ours) {
      await applyRecords(fd, state.records(), target, "recover");
      await target.sync();
      result = { action: "completed", message: `completed an interrupted sync of ${target.path} (sync${begun}): it is the new image` };
    } else if (state.committed) {
      result = { action: "removed", message: `removed a journal beside ${target.path} that belongs to another file (sync${begun}); ${target.path} is unchanged` };
    } else if (state.header) {
      result = { action: "rolled back", message: `rolled back an interrupted sync of ${target.path} (sync${begun}): it is the image it was before that sync` };
    } else {
      result = { action: "removed", message: `removed ${o.journalPath}: ${state.why}; ${target.path} is unchanged` };
    }
  } catch (e) {
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
  const size = Number(fs.fstatSync(fd).size);
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
