/**
 * A session the listener will not serve (its caps on sessions are reached) after a complete
 * handshake: the client's first request, which must come within `timeoutMs`, is answered
 * with ERROR EBUSY and the message, then the channel ends (END). The client reads a plain
 * "busy, try again later" rather than a dropped connection. The request is a v1 session's
 * OPEN or a batch's BATCH (spec "Batches"): the ERROR, without a slot, carries its cookie,
 * read from the header; nothing else of it is looked at.
 */
import { encode } from "../../protocol/codec.ts";
import { HEADER_SIZE } from "../../protocol/constants.ts";
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
    if (record.length < HEADER_SIZE) return;
    const cookie = new DataView(record.buffer, record.byteOffset, record.byteLength).getUint32(4);
    await channel.send(encode({ type: "ERROR", cookie, code: "EBUSY", message: options.message }));
  } catch {
    // A peer that went away or sent garbage: there is nobody left to tell.
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    channel.close();
  }
}
