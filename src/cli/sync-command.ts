/**
 * `ssync sync SRC DST`: a local sync over the in-memory protocol pair, then optionally
 * --verify. A destination another ssync writes is waited for up to --wait seconds (by
 * storage); `signal` (Ctrl-C) aborts the sync through its session's one abort path.
 */
import process from "node:process";
import { verifyIdentical } from "../engine/verify.ts";
import { WorkerPool } from "../engine/worker-pool.ts";
import { syncLocal } from "../session/local-sync.ts";
import { looksLikeRemote } from "../net/host-port.ts";
import { SessionProgress } from "../session/session-progress.ts";
import { abortable } from "../util/abortable.ts";
import { ErrnoError, RemoteError, UsageError } from "../util/errors.ts";
import { describeSettings, type EngineFlags, engineOptions, ownerIfRoot } from "./engine-options.ts";
import { progressFormat } from "./progress-mode.ts";
import { showProgress } from "./show-progress.ts";
import { formatSummary, type Summary, summarize } from "./summary.ts";
import { busyAfterWait, isBusy } from "./wait-while-busy.ts";

export interface SyncHooks {
  /** Runs after the sync's COMMIT_OK and before --verify (tests corrupt the destination here). */
  beforeVerify?: () => Promise<void> | void;
  /** false forces the portable storage paths. */
  ffi?: boolean;
  /** Aborts the sync (and a --verify under way): Ctrl-C. */
  signal?: AbortSignal;
}

/** Refuses a HOST:… name (see checkLocalName), before anything looks at the disk. */
export function checkLocalNames(src: string, dst: string): void {
  checkLocalName(src, { what: "source", instead: `ssync pull ${src} ${dst}` });
  checkLocalName(dst, { what: "destination", instead: `ssync push ${src} ${dst}` });
}

export async function runSyncCommand(src: string, dst: string, flags: EngineFlags, hooks: SyncHooks = {}): Promise<Summary> {
  checkLocalNames(src, dst);
  const o = engineOptions(flags);
  const owner = ownerIfRoot(o.metadata);
  const pool = new WorkerPool();
  const progress = new SessionProgress();
  const format = progressFormat(o.progress, { quiet: o.quiet, isTTY: process.stderr.isTTY === true });
  const stopProgress = showProgress(progress, { format, local: true, phase: "sync", signal: hooks.signal });
  if (o.verbose) console.error(`ssync: sync ${src} -> ${dst}: ${describeSettings(o)}`);
  try {
    const report = await syncLocal(src, dst, {
      ...o,
      metadata: owner.wanted,
      pool,
      ffi: hooks.ffi,
      log: (m) => o.quiet || console.error(`ssync: ${m}`),
      lockWaitMs: o.waitMs,
      signal: hooks.signal,
      progress,
    }).catch((e) => {
      throw localSyncError(e, o.waitMs);
    }).finally(stopProgress);
    report.metadata?.notes.push(...owner.notes);
    await hooks.beforeVerify?.();
    let verified = false;
    if (o.verify && !o.dryRun) {
      await abortable(verifyIdentical(src, dst, { ffi: hooks.ffi }), hooks.signal);
      verified = true;
    }
    return summarize(report, { mode: "sync", source: src, destination: dst, verified });
  } finally {
    await pool[Symbol.asyncDispose]();
  }
}

/**
 * A local sync's failure as the user reads it: the destination is on this machine, so its
 * refusals are no "remote:" errors (a root mismatch, EBADMSG, stays one: it maps to exit 3).
 */
export function localSyncError(e: unknown, waitMs: number): unknown {
  if (isBusy(e)) return busyAfterWait(new ErrnoError("EBUSY", (e as Error).message), waitMs);
  return e instanceof RemoteError && e.code !== "EBADMSG" ? new ErrnoError(e.code, e.message, { cause: e }) : e;
}

/** `sync` is local only: an argument that reads as HOST:… is refused, never made a file of that name. */
function checkLocalName(name: string, o: { what: string; instead: string }): void {
  if (!looksLikeRemote(name)) return;
  throw new UsageError(
    `Invalid ${o.what} "${name}": it reads as a remote (HOST:…) and ssync sync is local only; ` +
      `with a listener use ${o.instead}; a local file with a colon in its name is ./${name}`,
  );
}

/** --quiet prints no summary for people; --json's object is still printed (a script asked for it). */
export function printSummary(s: Summary, flags: { json?: boolean; quiet?: boolean }): void {
  if (flags.quiet && !flags.json) return;
  console.log(flags.json ? JSON.stringify(s) : formatSummary(s));
}
