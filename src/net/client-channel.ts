/**
 * A client's connection to a listener, as `ssync push`/`pull` make it, for one file session
 * or for a batch: dial (host-key policy of known_hosts, optional pairing code), then the
 * channel stack every client session runs on:
 *
 *   NoiseRecordChannel → IdleTimeoutChannel (--idle-timeout; a slow reader still counts as
 *   progress) → RateLimitedChannel (--bwlimit, when given) → IncompleteOnLossChannel (a lost
 *   connection reads "interrupted: rerun").
 *
 * `signal` (Ctrl-C) cuts the dial short; a connection that arrives after it is closed.
 */
import { abortable } from "../util/abortable.ts";
import { type DialOptions, dial } from "./dial.ts";
import { formatEndpoint } from "./host-port.ts";
import { IdleTimeoutChannel } from "./idle-timeout-channel.ts";
import { IncompleteOnLossChannel } from "./incomplete-on-loss-channel.ts";
import { RateLimitedChannel } from "./rate-limited-channel.ts";
import type { RecordChannel } from "./record-channel.ts";
import type { SecureConnection } from "./secure-connection.ts";
import type { TokenBucket } from "./token-bucket.ts";

export interface ClientChannelOptions extends DialOptions {
  idleTimeoutMs: number;
  /** --bwlimit: one bucket per direction (shared by every connection of the command). */
  buckets?: { send: TokenBucket; receive: TokenBucket };
  signal?: AbortSignal;
}

export interface ClientChannel extends AsyncDisposable {
  conn: SecureConnection;
  /** The channel sessions run on. */
  channel: RecordChannel;
  /** The idle timeout's activity: begun while the listener owes the client nothing. */
  activity: { begin(): void; end(): void };
}

export async function openClientChannel(o: ClientChannelOptions): Promise<ClientChannel> {
  const conn = await abortable(dial(o), o.signal, { discard: (late) => late[Symbol.asyncDispose]() });
  const socket = conn.channel.socket;
  const idle = new IdleTimeoutChannel(conn.channel, {
    timeoutMs: o.idleTimeoutMs,
    // Bytes the kernel took from us: a slow reader still counts as progress.
    sendProgress: () => socket.bytesWritten - socket.writableLength,
  });
  const limited = o.buckets === undefined ? idle : new RateLimitedChannel(idle, { ...o.buckets, activity: idle.activity });
  const channel = new IncompleteOnLossChannel(limited, { peer: formatEndpoint(o) });
  return {
    conn,
    channel,
    activity: idle.activity,
    [Symbol.asyncDispose]: () => conn[Symbol.asyncDispose]().catch(() => {}),
  };
}
