/**
 * `ssync push SRC REMOTE REMOTE...`: one read of SRC brings every destination up to date
 * (session/fan-out-source.ts, spec §5.11).
 *
 * 1. Every REMOTE is resolved as for a single push (host alias, port, PATH defaulting to
 *    SRC's name); a folder, a pairing code and two REMOTEs naming the same destination are
 *    refused before anything is dialled.
 * 2. SRC is opened once; one session per destination, all at once, sharing the range plan,
 *    the read and the worker pool; each has its own connection, hash key, --bwlimit bucket
 *    and idle timeout. The progress shown is the first destination's (all move together).
 * 3. --verify: a second fan-out, dry run, of the destinations that succeeded.
 * 4. The summary reports each destination (--json: `destinations`, each a push summary or an
 *    error object) and the source's bytes read once; one failed destination fails only
 *    itself, and the exit code is the most serious of theirs (FilesFailedError).
 */
import { basename } from "node:path";
import { networkPool } from "./network-pool.ts";
import type { SyncReport } from "../session/client-session.ts";
import { FanOutSource } from "../session/fan-out-source.ts";
import type { Storage } from "../storage/storage.ts";
import { FilesFailedError, UsageError } from "../util/errors.ts";
import { describeError, errorCodeOf, exitCodeOf } from "./exit-code.ts";
import { type FolderFlags, folderOptionGiven, isFolder } from "./sync-folder-command.ts";
import {
  checkLocal,
  checkVerified,
  openLocal,
  parseRemote,
  type RemoteContext,
  remoteContext,
  type RemoteFlags,
  remoteSession,
} from "./remote-sync-command.ts";
import { formatSummary, type Summary, SUMMARY_SCHEMA, summarize } from "./summary.ts";
import { bytes } from "./summary.ts";

type Failed = { ok: false; destination: string; error: { code: string; message: string; exitCode: number } };

export interface FanOutSummary {
  schema: typeof SUMMARY_SCHEMA;
  ok: boolean;
  exitCode: number;
  mode: "push";
  fanOut: true;
  source: string;
  dryRun: boolean;
  size: number;
  /** Source bytes read for the whole fan-out: each data range once, whatever the number of destinations. */
  sourceBytesRead: number;
  seconds: number;
  /** In command-line order: a push summary (`ok: true`), or why that destination failed. */
  destinations: (Summary | Failed)[];
}

export async function runFanOut(
  local: string,
  remotes: string[],
  o: { flags: RemoteFlags & Partial<FolderFlags>; signal?: AbortSignal },
): Promise<{ summary: FanOutSummary; failure?: FilesFailedError }> {
  const { signal } = o;
  const started = performance.now();
  for (const r of remotes) checkLocal(local, { other: "pull", remote: r });
  if (local.endsWith("/") || isFolder(local) === true) {
    throw new UsageError(`Cannot push the folder ${local} to several destinations: a fan-out takes one file (push a folder to one listener at a time)`);
  }
  const given = folderOptionGiven(o.flags);
  if (given) throw new UsageError(`--${given} is for a folder push only; a fan-out to several destinations takes one file`);
  if (o.flags.pair !== undefined) {
    throw new UsageError("Invalid --pair with several destinations: a pairing code is for one listener; pair with each first (ssync push --pair CODE FILE HOST)");
  }
  const contexts: RemoteContext[] = [];
  for (const text of remotes) {
    const remote = parseRemote(text);
    contexts.push(await remoteContext("push", { remote: { ...remote, path: remote.path ?? basename(local) }, flags: o.flags, signal }));
  }
  const names = contexts.map((c) => `${c.peer}:${c.remote.path}`);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice !== undefined) throw new UsageError(`Invalid destinations: ${twice} is named twice`);
  const { o: engine, say } = contexts[0];
  const pool = networkPool();
  let store: Storage | undefined;
  try {
    store = await openLocal("push", local, { dryRun: engine.dryRun, inplace: engine.inplace, waitMs: engine.waitMs, signal, say });
    const src = store;
    let bytesRead = 0;
    /** One fan-out pass over the destinations `which` (indexes into contexts). */
    const pass = async (which: number[], dryRun: boolean, phase: "sync" | "verify") => {
      const fan = new FanOutSource({ pool, store: src, blockSize: engine.blockSize, signal: signal ?? new AbortController().signal, members: which.length });
      const outcomes = await Promise.allSettled(which.map((d, k) => {
        const member = fan.member(k);
        const session = remoteSession(contexts[d], { mode: "push", local, store: src, pool, dryRun, pair: undefined, phase, signal, progress: k === 0, source: member });
        // A session that ended before it began (a refused dial) leaves too: nobody waits for it.
        return session.finally(() => member.leave());
      }));
      bytesRead += fan.bytesRead;
      return outcomes;
    };
    const all = contexts.map((_, i) => i);
    const results: (SyncReport | { error: unknown })[] = (await pass(all, engine.dryRun, "sync")).map((r) =>
      r.status === "fulfilled" ? r.value : { error: r.reason }
    );
    const verified = new Set<number>();
    if (engine.verify && !engine.dryRun) {
      const ok = all.filter((i) => !("error" in results[i]));
      const checks = await pass(ok, true, "verify");
      ok.forEach((d, k) => {
        const check = checks[k];
        try {
          if (check.status === "rejected") throw check.reason;
          checkVerified(check.value, results[d] as SyncReport, { source: local, destination: names[d] });
          verified.add(d);
        } catch (e) {
          results[d] = { error: e };
        }
      });
    }
    const destinations = results.map((r, i): Summary | Failed => {
      if ("error" in r) return { ok: false, destination: names[i], error: { code: errorCodeOf(r.error), message: describeError(r.error), exitCode: exitCodeOf(r.error) } };
      return summarize(r, { mode: "push", source: local, destination: names[i], verified: verified.has(i) });
    });
    const errors = results.flatMap((r) => "error" in r ? [r.error] : []);
    const failure = errors.length > 0 ? new FilesFailedError(errors, { files: results.length, noun: "destinations" }) : undefined;
    const summary: FanOutSummary = {
      schema: SUMMARY_SCHEMA,
      ok: failure === undefined,
      exitCode: failure === undefined ? 0 : exitCodeOf(failure),
      mode: "push",
      fanOut: true,
      source: local,
      dryRun: engine.dryRun,
      size: src.size,
      sourceBytesRead: bytesRead,
      seconds: Math.round((performance.now() - started) / 10) / 100,
      destinations,
    };
    return { summary, ...(failure ? { failure } : {}) };
  } finally {
    await store?.[Symbol.asyncDispose]();
    await pool[Symbol.asyncDispose]();
  }
}

export function formatFanOutSummary(s: FanOutSummary): string {
  const lines: string[] = [];
  for (const d of s.destinations) lines.push(d.ok ? formatSummary(d) : `${s.source} -> ${d.destination}: failed: ${d.error.message}`);
  const good = s.destinations.filter((d) => d.ok).length;
  lines.push(
    `${s.dryRun ? "Dry run: " : ""}${s.source}: ${good} of ${s.destinations.length} destinations ${s.dryRun ? "compared" : "identical"}; ` +
      `source read once: ${bytes(s.sourceBytesRead)} in ${s.seconds} s`,
  );
  return lines.join("\n");
}

export function printFanOutSummary(s: FanOutSummary, flags: { json?: boolean; quiet?: boolean }): void {
  if (flags.quiet && !flags.json) return;
  console.log(flags.json ? JSON.stringify(s) : formatFanOutSummary(s));
}
