/** Records and bytes that crossed the channel, per message type and direction. */
export class WireCounters {
  recordsSent = 0;
  recordsReceived = 0;
  bytesSent = 0;
  bytesReceived = 0;
  readonly sentByType: Record<string, number> = {};
  readonly receivedByType: Record<string, number> = {};

  sent(type: string, bytes: number): void {
    this.recordsSent++;
    this.bytesSent += bytes;
    this.sentByType[type] = (this.sentByType[type] ?? 0) + 1;
  }

  received(type: string, bytes: number): void {
    this.recordsReceived++;
    this.bytesReceived += bytes;
    this.receivedByType[type] = (this.receivedByType[type] ?? 0) + 1;
  }
}
