/**
 * The end-of-sync summary: one JSON object (--json) or a few lines for people.
 *
 * The JSON object is versioned by `schema` (SUMMARY_SCHEMA): a field may be added within a
 * schema, none removed or changed in meaning. A failure under --json is the object of
 * exit-code.ts errorObject instead ({schema, ok: false, error: {code, message}, exitCode}).
 */
import type { SyncReport } from "../session/client-session.ts";
import type { StorageKind } from "../storage/storage.ts";
import { formatBytes } from "../util/format-bytes.ts";

/** Said when the source is a block device: nothing tells whether it changed while it was read. */
export const BLOCK_DEVICE_SOURCE_WARNING =
  "source is a block device: changes during the sync cannot be detected; sync from a snapshot (lvcreate --snapshot, qemu-img) for a consistent image";

/** The version of the --json objects (summary and error). */
export const SUMMARY_SCHEMA = 1;

export interface Summary {
  schema: typeof SUMMARY_SCHEMA;
  ok: true;
  exitCode: 0;
  mode: "sync" | "push" | "pull";
  source: string;
  destination: string;
  dryRun: boolean;
  /** The destination was already identical to the source before this run (same size, nothing differed, no metadata to fix). */
  identical: boolean;
  /** This run changed the destination (never in a dry run). */
  changed: boolean;
  /** The source's size: the destination's after the sync (a block device keeps its own). */
  size: number;
  /** The destination's size before the sync (0 when it is new); differs from `size` when it grew or shrank. */
  destinationSizeBefore: number;
  blockSize: number;
  hash: string;
  /** Bytes of the source compared against the destination (its whole size). */
  bytesCompared: number;
  sourceBytesRead: number;
  destinationBytesRead: number;
  sourceHoleBytesSkipped: number;
  destinationHoleBytesSkipped: number;
  /** Blocks and bytes that differed and were sent as DATA (in a dry run: would be). */
  blocksSent: number;
  dataBytesSent: number;
  /** DATA payload bytes after compression: on the wire (a local sync: between its two sides in memory). */
  dataBytesOnWire: number;
  /** Bytes that differed and were all zero in the source, sent as ZERO ranges. */
  zeroBytesSent: number;
  /** Bytes written to the destination, and bytes turned into holes there. */
  bytesWritten: number;
  holeBytesPunched: number;
  /** Every record the client sent and received, headers included; absent for a local sync. */
  wireBytesSent?: number;
  wireBytesReceived?: number;
  /** Bytes of the digest records the two sides exchanged (SIGS_REPLY, READ_DIFF; headers included). */
  signatureBytes: number;
  seconds: number;
  /** bytesCompared per second, in MB/s (10^6). */
  throughputMBps: number;
  /**
   * The root hash both sides compared, keyed with the session's hash key: a random one, or the
   * destination's cached one (`destinationCacheUsed`), which repeats while its cache lives; it
   * identifies nothing across runs (compare `identical`, or the images themselves, instead).
   */
  sessionRootHash: string;
  /** The destination answered from its signature cache (spec §5.10): it read none of its file to compare. */
  destinationCacheUsed: boolean;
  verified: boolean;
  /** A file source is checked for changes during the sync (exit 3); a block device cannot be. */
  sourceKind: StorageKind;
  /** What the user should know about this result (BLOCK_DEVICE_SOURCE_WARNING); empty when nothing. */
  warnings: string[];
  /** File metadata the destination took (a dry run: would take): "mode", "mtime", "owner". */
  metadataApplied: string[];
  /** Those of them it did not have already (an identical rerun may still change them). */
  metadataChanged: string[];
}

export function summarize(
  r: SyncReport,
  names: {
    mode: Summary["mode"];
    source: string;
    destination: string;
    verified: boolean;
  },
): Summary {
  const push = r.mode === "push";
  const src = push ? r.local : r.remote;
  const dst = push ? r.remote : r.local;
  const sourceKind = push ? r.localKind : r.remoteKind;
  // A block device keeps its size (the sync covers the source's part of it): no change to report.
  const sizeBefore = (push ? r.remoteKind : r.localKind) === "block-device" ? r.size : r.destinationSizeBefore;
  const differed = r.local.blocksSent > 0 || r.local.bytesZeroed > 0;
  // Metadata a rerun fixed (metadataChanged) was a difference too.
  const identical = sizeBefore === r.size && !differed && (r.metadata?.changed.length ?? 0) === 0;
  // A local sync's two sides talk through memory: it has no wire to report.
  const wire = names.mode === "sync" ? {} : {
    wireBytesSent: r.wire.bytesSent,
    wireBytesReceived: r.wire.bytesReceived,
  };
  return {
    schema: SUMMARY_SCHEMA,
    ok: true,
    exitCode: 0,
    mode: names.mode,
    source: names.source,
    destination: names.destination,
    dryRun: r.dryRun,
    identical,
    changed: !r.dryRun && !identical,
    size: r.size,
    destinationSizeBefore: sizeBefore,
    blockSize: r.blockSize,
    hash: r.hash,
    bytesCompared: r.size,
    sourceBytesRead: src.bytesRead,
    destinationBytesRead: dst.bytesRead,
    sourceHoleBytesSkipped: src.holeBytesSkipped,
    destinationHoleBytesSkipped: dst.holeBytesSkipped,
    blocksSent: r.local.blocksSent,
    dataBytesSent: r.local.bytesSent,
    dataBytesOnWire: r.local.dataBytesOnWire,
    zeroBytesSent: r.local.bytesZeroed,
    bytesWritten: dst.bytesWritten,
    holeBytesPunched: dst.bytesPunched,
    ...wire,
    signatureBytes: r.wire.signatureBytes,
    seconds: round(r.seconds, 3),
    throughputMBps: round(r.size / Math.max(r.seconds, 1e-6) / 1e6, 1),
    sessionRootHash: r.root,
    destinationCacheUsed: r.cacheUsed === true,
    verified: names.verified,
    sourceKind,
    warnings: [...(sourceKind === "block-device" ? [BLOCK_DEVICE_SOURCE_WARNING] : []), ...(r.metadata?.notes ?? [])],
    metadataApplied: r.metadata?.applied ?? [],
    metadataChanged: r.metadata?.changed ?? [],
  };
}

export function formatSummary(s: Summary): string {
  const verb = s.dryRun ? "would send" : "sent";
  const outcome = s.dryRun ? "compared" : s.identical ? "already identical" : "now identical";
  const onWire = s.mode === "sync" ? (s.dataBytesOnWire < s.dataBytesSent ? `, ${bytes(s.dataBytesOnWire)} compressed` : "") : `, ${bytes(s.dataBytesOnWire)} on the wire`;
  const lines = [
    `${s.dryRun ? "Dry run: " : ""}${s.source} -> ${s.destination}: ${outcome} (${bytes(s.size)}, root ${s.sessionRootHash.slice(0, 16)}${s.verified ? ", verified" : ""})`,
    `  compared  ${bytes(s.bytesCompared)} in ${s.seconds} s (${s.throughputMBps} MB/s)`,
    `  read      source ${bytes(s.sourceBytesRead)}, destination ${bytes(s.destinationBytesRead)}${s.destinationCacheUsed ? " (it answered from its signature cache)" : ""}`,
    `  holes     skipped without reading: source ${bytes(s.sourceHoleBytesSkipped)}, destination ${bytes(s.destinationHoleBytesSkipped)}`,
    `  ${verb.padEnd(9)} ${s.blocksSent} blocks (${bytes(s.dataBytesSent)}${onWire}), zero ranges ${bytes(s.zeroBytesSent)}`,
    `  wrote     ${bytes(s.bytesWritten)}, holes punched ${bytes(s.holeBytesPunched)}`,
    ...(s.destinationSizeBefore === s.size ? [] : [`  size      ${sizeChange(s)}`]),
    ...(s.metadataApplied.length > 0
      ? [`  metadata  ${s.metadataApplied.join(", ")} (${s.metadataChanged.length > 0 ? `${s.dryRun ? "would change" : "changed"}: ${s.metadataChanged.join(", ")}` : "unchanged"})`]
      : []),
    ...s.warnings.map((w) => `  warning   ${w}`),
  ];
  return lines.join("\n");
}

/** "destination shrank from 8.0 GiB to 4.0 GiB" and the like. */
function sizeChange(s: Summary): string {
  const verb = s.size > s.destinationSizeBefore ? (s.dryRun ? "would grow" : "grew") : s.dryRun ? "would shrink" : "shrank";
  return `destination ${verb} from ${bytes(s.destinationSizeBefore)} to ${bytes(s.size)}`;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Byte counts for people; the listener's log uses the same (util/format-bytes.ts). */
export const bytes = formatBytes;
