import type { RecordParts } from "../util/record-parts.ts";

/**
 * A reliable, ordered, message-preserving duplex: one protocol message per record.
 * Implemented by the encrypted Noise record layer over TCP and by the in-memory pair
 * that `ssync sync` uses, so that both run the very same protocol.
 *
 * A record is one buffer or its parts (header, payload) sent back to back: the channel
 * seals or copies them without concatenating first; the peer receives one buffer.
 *
 * Invariants:
 * - send() resolves once the record is accepted by a bounded buffer (back-pressure);
 *   it rejects after close or on a transport error. The caller must not change the record's
 *   bytes until then. After it, parts are no longer read (sealed or copied: the caller may
 *   reuse them), while a record given as one buffer may be handed to the peer as it is (the
 *   memory pair does): the caller gives that buffer up.
 * - receive() yields records in order, or null after the peer's orderly end;
 *   it rejects on any framing or authentication violation, after which the channel is dead.
 * - close() is idempotent and wakes every pending send/receive.
 */
export interface RecordChannel extends AsyncDisposable {
  send(record: RecordParts): Promise<void>;
  receive(): Promise<Uint8Array | null>;
  close(reason?: Error): void;
  /**
   * How full the send queue is: bytes send() accepted that the transport has not taken yet,
   * as a fraction of the bytes past which send() waits (≥ 1: sends wait for the link). The
   * sender's link-pressure signal (CompressPolicy); cheap, read-only. Absent or 0: no link
   * to measure (the in-memory pair). Wrappers pass their inner channel's on.
   */
  sendBacklog?(): number;
  /**
   * True when the peer runs in this process (the in-memory pair of `ssync sync`): there is no
   * link latency for requests in flight to cover, and both sides' buffers count against one
   * process's memory. Absent: a peer over a link. Wrappers pass their inner channel's on.
   */
  readonly inProcess?: boolean;
}
