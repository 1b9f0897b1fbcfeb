/** Records and bytes that crossed the channel, per direction. */
export class WireCounters {
  recordsSent = 0;
  recordsReceived = 0;
  bytesSent = 0;
  bytesReceived = 0;

  sent(bytes: number): void {
    this.recordsSent++;
    this.bytesSent += bytes;
  }

  received(bytes: number): void {
    this.recordsReceived++;
    this.bytesReceived += bytes;
  }
}
