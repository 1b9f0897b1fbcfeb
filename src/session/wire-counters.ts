/** Records and bytes that crossed the channel, per direction. */
import type { MessageType } from "../../protocol/constants.ts";

/** The records that carry block digests: what a sync spends to compare. */
const SIGNATURE_TYPES: ReadonlySet<string> = new Set<MessageType>(["SIGS_REPLY", "READ_DIFF", "SUB_DIGESTS"]);

export class WireCounters {
  recordsSent = 0;
  recordsReceived = 0;
  bytesSent = 0;
  bytesReceived = 0;
  /** Bytes of the digest records (SIGS_REPLY, READ_DIFF, SUB_DIGESTS; header included), either way. */
  signatureBytes = 0;

  sent(bytes: number, type?: MessageType): void {
    this.recordsSent++;
    this.bytesSent += bytes;
    if (type !== undefined && SIGNATURE_TYPES.has(type)) this.signatureBytes += bytes;
  }

  received(bytes: number, type?: MessageType): void {
    this.recordsReceived++;
    this.bytesReceived += bytes;
    if (type !== undefined && SIGNATURE_TYPES.has(type)) this.signatureBytes += bytes;
  }
}
