/** The end-of-sync summary: one JSON object (--json) or a few lines for people. */
import type { SyncReport } from "../session/client-session.ts";
import type { StorageKind } from "../storage/storage.ts";
import { formatBytes } from "../util/format-bytes.ts";

/** Said when the source is a block device: nothing tells whether it changed while it was read. */
export const BLOCK_DEVICE_SOURCE_WARNING =
  "source is a block device: changes during the sync cannot be detected; sync from a snapshot (lvcreate --snapshot, qemu-img) for a consistent image";

export interface Summary {
  ok: true;
  mode: "sync" | "push" | "pull";
  source: string;
  destination: string;
  dryRun: boolean;
  size: number;
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
  /** DATA payload bytes on the wire, after compression. */
  dataBytesOnWire: number;
  /** Bytes that differed and were all zero in the source, sent as ZERO ranges. */
  zeroBytesSent: number;
  /** Bytes written to the destination, and bytes turned into holes there. */
  bytesWritten: number;
  holeBytesPunched: number;
  /** Every record the client sent and received, headers included. */
  wireBytesSent: number;
  wireBytesReceived: number;
  /** Bytes of the digest records the two sides exchanged (SIGS_REPLY, READ_DIFF; headers included). */
  signatureBytes: number;
  seconds: number;
  /** bytesCompared per second, in MB/s (10^6). */
  throughputMBps: number;
  rootHash: string;
  verified: boolean;
  /** A file source is checked for changes during the sync (exit 3); a block device cannot be. */
  sourceKind: StorageKind;
  /** What the user should know about this result (BLOCK_DEVICE_SOURCE_WARNING); empty when nothing. */
  warnings: string[];
}

export function summarize(r: SyncReport, names: { mode: Summary["mode"]; source: string; destination: string; verified: boolean }): Summary {
  const push = r.mode === "push";
  const src = push ? r.local : r.remote;
  const dst = push ? r.remote : r.local;
  const sourceKind = push ? r.localKind : r.remoteKind;
  return {
    ok: true,
    mode: names.mode,
    source: names.source,
    destination: names.destination,
    dryRun: r.dryRun,
    size: r.size,
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
    wireBytesSent: r.wire.bytesSent,
    wireBytesReceived: r.wire.bytesReceived,
    signatureBytes: r.wire.signatureBytes,
    seconds: round(r.seconds, 3),
    throughputMBps: round(r.size / Math.max(r.seconds, 1e-6) / 1e6, 1),
    rootHash: r.root,
    verified: names.verified,
    sourceKind,
    warnings: sourceKind === "block-device" ? [BLOCK_DEVICE_SOURCE_WARNING] : [],
  };
}

export function formatSummary(s: Summary): string {
  const verb = s.dryRun ? "would send" : "sent";
  const changed = s.blocksSent > 0 || s.zeroBytesSent > 0 || s.bytesWritten > 0 || s.holeBytesPunched > 0;
  const outcome = s.dryRun ? "compared" : changed ? "now identical" : "already identical";
  const lines = [
    `${s.dryRun ? "Dry run: " : ""}${s.source} -> ${s.destination}: ${outcome} (${bytes(s.size)}, root ${s.rootHash.slice(0, 16)}${s.verified ? ", verified" : ""})`,
    `  compared  ${bytes(s.bytesCompared)} in ${s.seconds} s (${s.throughputMBps} MB/s)`,
    `  read      source ${bytes(s.sourceBytesRead)}, destination ${bytes(s.destinationBytesRead)}`,
    `  holes     skipped without reading: source ${bytes(s.sourceHoleBytesSkipped)}, destination ${bytes(s.destinationHoleBytesSkipped)}`,
    `  ${verb.padEnd(9)} ${s.blocksSent} blocks (${bytes(s.dataBytesSent)}, ${bytes(s.dataBytesOnWire)} on the wire), zero ranges ${bytes(s.zeroBytesSent)}`,
    `  wrote     ${bytes(s.bytesWritten)}, holes punched ${bytes(s.holeBytesPunched)}`,
    ...s.warnings.map((w) => `  warning   ${w}`),
  ];
  return lines.join("\n");
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Byte counts for people; the listener's log uses the same (util/format-bytes.ts). */
export const bytes = formatBytes;
