/**
 * A reliable, ordered, message-preserving duplex: one protocol message per record.
 * Implemented by the encrypted Noise record layer over TCP and by the in-memory pair
 * that `ssync sync` uses, so that both run the very same protocol.
 *
 * Invariants:
 * - send() resolves once the record is accepted by a bounded buffer (back-pressure);
 *   it rejects after close or on a transport error.
 * - receive() yields records in order, or null after the peer's orderly end;
 *   it rejects on any framing or authentication violation, after which the channel is dead.
 * - close() is idempotent and wakes every pending send/receive.
 */
export interface RecordChannel extends AsyncDisposable {
  send(record: Uint8Array): Promise<void>;
  receive(): Promise<Uint8Array | null>;
  close(reason?: Error): void;
}
