/**
 * Remembers the first ERROR a session sent, so the listener's log line names the real cause
 * of a failure (ENOSPC at a write) rather than what followed it (the client hanging up on
 * that ERROR, a broken pipe). Only each record's type field is looked at on the way out.
 */
import { decode } from "../../protocol/codec.ts";
import { MessageCode } from "../../protocol/constants.ts";
import type { ErrorMessage } from "../../protocol/messages.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import { joinRecord, recordHead } from "../util/record-parts.ts";

export interface SentErrors {
  channel: RecordChannel;
  /** The first ERROR sent, if any. */
  first(): ErrorMessage | undefined;
}

export function watchSentErrors(inner: RecordChannel): SentErrors {
  let first: ErrorMessage | undefined;
  const channel: RecordChannel = {
    send(record) {
      const head = recordHead(record, 2);
      if (first === undefined && head.length >= 2 && ((head[0] << 8) | head[1]) === MessageCode.ERROR) {
        try {
          const m = decode(joinRecord(record));
          if (m.type === "ERROR") first = m;
        } catch {
          // Not ours to judge: the peer will.
        }
      }
      return inner.send(record);
    },
    receive: () => inner.receive(),
    close: (reason) => inner.close(reason),
    sendBacklog: () => inner.sendBacklog?.() ?? 0,
    [Symbol.asyncDispose]: () => inner[Symbol.asyncDispose](),
  };
  return { channel, first: () => first };
}
