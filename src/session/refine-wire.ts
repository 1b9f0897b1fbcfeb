/** Between engine ops and messages, for DATA, ZERO and PATCH (spec §3, §5.8). */
import { encodeParts, maskedPageBytes } from "../../protocol/codec.ts";
import { HEADER_SIZE } from "../../protocol/constants.ts";
import type { DataMessage, PatchMessage, ZeroMessage } from "../../protocol/messages.ts";
import type { WriteOp } from "../engine/destination-side.ts";
import type { JobOp } from "../engine/scan-job.ts";
import type { SideStats } from "../engine/side-context.ts";

export type WriteMessage = DataMessage | ZeroMessage | PatchMessage;

/**
 * The record of an op that carries bytes or zeros (every kind but "refine"), with `cookie`.
 * A DATA goes as [header, payload] (encodeParts): its payload is copied once, by the cipher.
 */
export function encodeOp(op: Exclude<JobOp, { kind: "refine" }>, cookie: number): Uint8Array | [Uint8Array, Uint8Array] {
  return encodeParts({ ...opMessage(op), cookie } as WriteMessage);
}

/** The request that sends `op` (push). */
export function opMessage(op: Exclude<JobOp, { kind: "refine" }>): Omit<WriteMessage, "cookie"> {
  switch (op.kind) {
    case "data":
      return { type: "DATA", offset: op.offset, length: op.length, payload: op.payload, zstd: op.zstd };
    case "zero":
      return { type: "ZERO", offset: op.offset, length: op.length };
    case "patch":
      return { type: "PATCH", offset: op.offset, length: op.length, data: op.data, zeros: op.zeros, payload: op.payload, zstd: op.zstd };
  }
}

export function writeOpOf(m: WriteMessage): WriteOp {
  switch (m.type) {
    case "DATA":
      return { kind: "data", offset: m.offset, length: m.length, payload: m.payload, zstd: m.zstd };
    case "ZERO":
      return { kind: "zero", offset: m.offset, length: m.length };
    case "PATCH":
      return { kind: "patch", offset: m.offset, length: m.length, data: m.data, zeros: m.zeros, payload: m.payload, zstd: m.zstd };
  }
}

/** What a received PATCH holds until applied: its record, its decompressed pages, the patched blocks. */
export function patchHoldBytes(m: PatchMessage): number {
  const payload = m.payload?.length ?? 0;
  return HEADER_SIZE + 2 * m.data.length + payload + (m.zstd ? maskedPageBytes(m.data, m.length) : 0) + m.length;
}

/** Pull: a PATCH the source sent, counted as it arrives (as the source counts it). */
export function countReceivedPatch(s: SideStats, m: PatchMessage, blockSize: number): void {
  s.blocksSent += Math.ceil(m.length / blockSize);
  s.blocksPatched += Math.ceil(m.length / blockSize);
  s.bytesSent += maskedPageBytes(m.data, m.length);
  s.bytesZeroed += maskedPageBytes(m.zeros, m.length);
  s.dataBytesOnWire += m.payload?.length ?? 0;
}
