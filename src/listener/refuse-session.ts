/**
 * A session the listener will not serve (its caps on sessions are reached) after a complete
 * handshake: the client's first request, which must come within `timeoutMs`, is answered
 * with ERROR EBUSY and the message, then the channel ends (END). The client reads a plain
 * "busy, try again later" rather than a dropped connection.
 */
import { decode, encode } from "../../protocol/codec.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import { asError } from "../util/errors.ts";

export async function refuseSession(
  channel: RecordChannel,
  options: { message: string; timeoutMs: number; signal?: AbortSignal },
): Promise<void> {
  const stop = (reason: unknown) => channel.close(asError(reason));
  const timer = setTimeout(() => stop(new Error(`no request within ${options.timeoutMs} ms`)), options.timeoutMs);
  const onAbort = () => stop(options.signal!.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const record = await channel.receive();
    if (record === null) return;
    const request = decode(record);
    await channel.send(encode({ type: "ERROR", cookie: request.cookie, code: "EBUSY", message: options.message }));
  } catch {
    // A peer that went away or sent garbage: there is nobody left to tell.
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    channel.close();
  }
}
