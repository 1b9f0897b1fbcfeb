/**
 * The summary of a folder sync (`ssync sync SRC/ DST/`, or push/pull of DIR/): one JSON object
 * (--json, schema 1, mode "sync", "push" or "pull", `folder: true`, a `files` array with each file's result, whole-run fields), or
 * a few lines for people. `ok` is false and `exitCode` non-zero when a file failed.
 */
import type { TreeReport } from "../session/tree-execute.ts";
import { errorCodeOf, exitCodeOf } from "./exit-code.ts";
import { describeError } from "./exit-code.ts";
import { FilesFailedError } from "../util/errors.ts";
import { bytes, SUMMARY_SCHEMA, summarize } from "./summary.ts";

export interface FolderFileSummary {
  path: string;
  /** synced: the destination changed (a dry run: would); identical: compared, nothing differed; quick-check: size and mtime matched, not read. */
  outcome: "synced" | "identical" | "quick-check" | "failed";
  size: number;
  sourceBytesRead: number;
  destinationBytesRead: number;
  blocksSent: number;
  dataBytesSent: number;
  zeroBytesSent: number;
  bytesWritten: number;
  holeBytesPunched: number;
  /** Why it was compared: new, size, mtime, attributes, pending (a journal beside it), checksum. */
  reason?: string;
  /** --verify re-read both and found them equal. A quick-check file is never verified (not read). */
  verified: boolean;
  error?: { code: string; message: string; exitCode: number };
}

type ErrorObject = { code: string; message: string; exitCode: number };

function errorOf(e: unknown): ErrorObject {
  return { code: errorCodeOf(e), message: describeError(e), exitCode: exitCodeOf(e) };
}

export interface FolderSummary {
  schema: typeof SUMMARY_SCHEMA;
  ok: boolean;
  exitCode: number;
  /** sync (local), push or pull (with a listener, over one batch). */
  mode: "sync" | "push" | "pull";
  folder: true;
  source: string;
  destination: string;
  dryRun: boolean;
  /** Files synced, identical, skipped by the quick check, failed; entries skipped (kinds), files excluded, entries deleted. */
  counts: {
    files: number;
    synced: number;
    identical: number;
    quickCheck: number;
    failed: number;
    skipped: number;
    excluded: number;
    deleted: number;
    /** Files --verify re-read (quick-check files are not: they are not read at all). */
    verified: number;
    /** Folders that could not be made, removals that failed. */
    foldersFailed: number;
    deleteFailed: number;
  };
  bytesCompared: number;
  sourceBytesRead: number;
  destinationBytesRead: number;
  dataBytesSent: number;
  bytesWritten: number;
  holeBytesPunched: number;
  seconds: number;
  /** --verify was asked (and this is no dry run). */
  verifyRequested: boolean;
  /** Every file of the set re-read and found equal (a quick-check file is not read: then false). */
  verified: boolean;
  files: FolderFileSummary[];
  skipped: { path: string; kind: string; note: string }[];
  /** Removed by --delete (a dry run: would be), folders end with "/". */
  deleted: string[];
  /** Absent from the source, kept, and why. */
  kept: { path: string; note: string }[];
  /** Why --delete removed nothing (some entry failed), or null. */
  deleteSkipped: string | null;
  /** Folders that could not be made and removals that failed, each with its error. */
  failures: { path: string; error: ErrorObject }[];
  /** What the user should know about the whole run (e.g. --owner not applied); empty when nothing. */
  warnings: string[];
}

export function summarizeFolder(
  r: TreeReport,
  names: { source: string; destination: string; verified: boolean; warnings: string[]; mode?: "sync" | "push" | "pull" },
): { summary: FolderSummary; failure?: FilesFailedError } {
  const mode = names.mode ?? "sync";
  const files = r.files.map((f): FolderFileSummary => {
    const zero = { sourceBytesRead: 0, destinationBytesRead: 0, blocksSent: 0, dataBytesSent: 0, zeroBytesSent: 0, bytesWritten: 0, holeBytesPunched: 0, verified: false };
    const why = f.reason === undefined ? {} : { reason: f.reason };
    if (f.outcome === "failed") return { path: f.path, outcome: "failed", size: f.size, ...zero, ...why, error: errorOf(f.error) };
    if (f.report === undefined) return { path: f.path, outcome: f.outcome, size: f.size, ...zero, ...why };
    const s = summarize(f.report, { mode, source: f.path, destination: f.path, verified: names.verified });
    return {
      path: f.path,
      outcome: s.identical ? "identical" : "synced",
      size: s.size,
      sourceBytesRead: s.sourceBytesRead,
      destinationBytesRead: s.destinationBytesRead,
      blocksSent: s.blocksSent,
      dataBytesSent: s.dataBytesSent,
      zeroBytesSent: s.zeroBytesSent,
      bytesWritten: s.bytesWritten,
      holeBytesPunched: s.holeBytesPunched,
      ...why,
      verified: f.verified === true,
    };
  });
  const count = (o: FolderFileSummary["outcome"]) => files.filter((f) => f.outcome === o).length;
  const sum = (k: keyof typeof files[number] & ("sourceBytesRead" | "destinationBytesRead" | "dataBytesSent" | "bytesWritten" | "holeBytesPunched" | "size")) =>
    files.reduce((n, f) => n + f[k], 0);
  const others = [...r.folderFailures.map((f) => ({ path: `${f.path}/`, error: f.error })), ...r.deleteFailures];
  const errors = [...r.files.filter((f) => f.outcome === "failed").map((f) => f.error), ...others.map((f) => f.error)];
  const failure = errors.length > 0 ? new FilesFailedError(errors, { files: files.length + others.length }) : undefined;
  const verifiedCount = files.filter((f) => f.verified).length;
  const summary: FolderSummary = {
    schema: SUMMARY_SCHEMA,
    ok: failure === undefined,
    exitCode: failure === undefined ? 0 : exitCodeOf(failure),
    mode,
    folder: true,
    source: names.source,
    destination: names.destination,
    dryRun: r.dryRun,
    counts: {
      files: files.length,
      synced: count("synced"),
      identical: count("identical"),
      quickCheck: count("quick-check"),
      failed: count("failed"),
      skipped: r.skipped.length,
      excluded: r.excluded,
      deleted: r.deleted.length,
      verified: verifiedCount,
      foldersFailed: r.folderFailures.length,
      deleteFailed: r.deleteFailures.length,
    },
    bytesCompared: sum("size"),
    sourceBytesRead: sum("sourceBytesRead"),
    destinationBytesRead: sum("destinationBytesRead"),
    dataBytesSent: sum("dataBytesSent"),
    bytesWritten: sum("bytesWritten"),
    holeBytesPunched: sum("holeBytesPunched"),
    seconds: Math.round(r.seconds * 1000) / 1000,
    verifyRequested: names.verified,
    // Every file of the set re-read and equal; a quick-check file is not read, so never verified.
    verified: names.verified && failure === undefined && verifiedCount === files.length,
    files,
    skipped: r.skipped,
    deleted: r.deleted.map((d) => d.kind === "folder" ? `${d.path}/` : d.path),
    kept: r.kept,
    deleteSkipped: r.deleteSkipped ?? null,
    failures: others.map((f) => ({ path: f.path, error: errorOf(f.error) })),
    warnings: names.warnings,
  };
  return { summary, failure };
}

export function formatFolderSummary(s: FolderSummary): string {
  const c = s.counts;
  const dry = s.dryRun;
  return [
    `${dry ? "Dry run: " : ""}${s.source} -> ${s.destination}: ${c.files} files, ${c.synced} ${dry ? "would change" : "synced"}, ${c.identical} identical, ` +
    `${c.quickCheck} skipped by the quick check (size and mtime), ${c.failed} failed` +
    (s.verifyRequested ? `; ${c.verified} verified${c.quickCheck > 0 ? ` (the ${c.quickCheck} skipped by the quick check were not read, so not verified)` : ""}` : ""),
    `  compared  ${bytes(s.bytesCompared)} in ${s.seconds} s`,
    `  read      source ${bytes(s.sourceBytesRead)}, destination ${bytes(s.destinationBytesRead)}`,
    `  ${(dry ? "would send" : "sent").padEnd(9)} ${bytes(s.dataBytesSent)}; wrote ${bytes(s.bytesWritten)}, holes punched ${bytes(s.holeBytesPunched)}`,
    ...(c.skipped + c.excluded > 0 ? [`  skipped   ${c.skipped} not regular files (links, devices, fifos, sockets), ${c.excluded} excluded`] : []),
    ...(s.deleted.length > 0 || s.kept.length > 0 ? [`  ${(dry ? "would delete" : "deleted").padEnd(9)} ${s.deleted.length}${s.kept.length > 0 ? ` (${s.kept.length} kept)` : ""}`] : []),
    ...(dry ? s.deleted.map((d) => `    ${d}`) : []),
    ...(s.deleteSkipped !== null ? [`  --delete  skipped: ${s.deleteSkipped}`] : []),
    ...s.files.filter((f) => f.error).map((f) => `  failed    ${f.path}: ${f.error!.message}`),
    ...s.failures.map((f) => `  failed    ${f.path}: ${f.error.message}`),
    ...s.warnings.map((w) => `  warning   ${w}`),
  ].join("\n");
}
