/** `ssync sync SRC DST`: a local sync over the in-memory protocol pair, then optionally --verify. */
import { verifyIdentical } from "../engine/verify.ts";
import { WorkerPool } from "../engine/worker-pool.ts";
import { syncLocal } from "../session/local-sync.ts";
import { type EngineFlags, engineOptions } from "./engine-options.ts";
import { formatSummary, type Summary, summarize } from "./summary.ts";

export interface SyncHooks {
  /** Runs after the sync's COMMIT_OK and before --verify (tests corrupt the destination here). */
  beforeVerify?: () => Promise<void> | void;
  /** false forces the portable storage paths. */
  ffi?: boolean;
}

export async function runSyncCommand(src: string, dst: string, flags: EngineFlags, hooks: SyncHooks = {}): Promise<Summary> {
  const o = engineOptions(flags);
  const pool = new WorkerPool();
  try {
    const report = await syncLocal(src, dst, { ...o, pool, ffi: hooks.ffi, log: (m) => console.error(`ssync: ${m}`) });
    await hooks.beforeVerify?.();
    let verified = false;
    if (o.verify && !o.dryRun) {
      await verifyIdentical(src, dst, { ffi: hooks.ffi });
      verified = true;
    }
    return summarize(report, { mode: "sync", source: src, destination: dst, verified });
  } finally {
    await pool[Symbol.asyncDispose]();
  }
}

export function printSummary(s: Summary, flags: { json?: boolean }): void {
  console.log(flags.json ? JSON.stringify(s) : formatSummary(s));
}
