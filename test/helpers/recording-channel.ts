/**
 * A RecordChannel that keeps what crossed it: every record sent and received is decoded
 * (protocol/codec.ts) and its message kept as type, cookie, offset/length and flags where the
 * type has them (payloads are not kept). Wrap one end of a pair: `sent` is that side's
 * messages, `received` the peer's.
 *
 * Invariant: records pass through unchanged and in order; a record that does not decode is
 * kept as "UNDECODABLE" and still passed on, so the engine sees what it would have seen.
 */
import assert from "node:assert/strict";
import { decode } from "../../protocol/codec.ts";
import type { MessageType } from "../../protocol/constants.ts";
import type { RecordChannel } from "../../src/net/record-channel.ts";
import { joinRecord, type RecordParts } from "../../src/util/record-parts.ts";

export interface WireMessage {
  readonly type: MessageType | "UNDECODABLE";
  readonly cookie?: number;
  readonly offset?: number;
  readonly length?: number;
  /** DATA only: the payload is one zstd frame. */
  readonly zstd?: boolean;
  /** DATA only: no payload (dry runs). */
  readonly noPayload?: boolean;
  /** Record bytes, header included. */
  readonly recordBytes: number;
}

export type Direction = "sent" | "received";

function describeRecord(rec: Uint8Array): WireMessage {
  let m;
  try {
    m = decode(rec);
  } catch {
    return { type: "UNDECODABLE", recordBytes: rec.length };
  }
  const out: { -readonly [K in keyof WireMessage]: WireMessage[K] } = { type: m.type, cookie: m.cookie, recordBytes: rec.length };
  if ("offset" in m) {
    out.offset = m.offset;
    out.length = m.length;
  }
  if (m.type === "DATA") {
    out.zstd = m.zstd;
    out.noPayload = m.payload === undefined;
  }
  return out;
}

export class RecordingChannel implements RecordChannel {
  readonly #inner: RecordChannel;
  readonly sent: WireMessage[] = [];
  readonly received: WireMessage[] = [];

  readonly inProcess: boolean | undefined;

  /** `inProcess`: what the channel says of its peer (RecordChannel.inProcess); default the inner channel's. */
  constructor(inner: RecordChannel, options: { inProcess?: boolean } = {}) {
    this.#inner = inner;
    this.inProcess = "inProcess" in options ? options.inProcess : inner.inProcess;
  }

  send(record: RecordParts): Promise<void> {
    // Decoded before the send: the record is the engine's and may be reused afterwards.
    this.sent.push(describeRecord(joinRecord(record)));
    return this.#inner.send(record);
  }

  async receive(): Promise<Uint8Array | null> {
    const rec = await this.#inner.receive();
    if (rec !== null) this.received.push(describeRecord(rec));
    return rec;
  }

  close(reason?: Error): void {
    this.#inner.close(reason);
  }

  sendBacklog(): number {
    return this.#inner.sendBacklog?.() ?? 0;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.#inner[Symbol.asyncDispose]();
  }

  /** The message types of one direction, in order. */
  types(dir: Direction): string[] {
    return this[dir].map((m) => m.type);
  }

  /** How many messages of each type one direction carried (types absent: not listed). */
  countByType(dir: Direction): Record<string, number> {
    const out: Record<string, number> = {};
    for (const m of this[dir]) out[m.type] = (out[m.type] ?? 0) + 1;
    return out;
  }

  /** The messages of one type in one direction, in order. */
  ofType(dir: Direction, type: MessageType): WireMessage[] {
    return this[dir].filter((m) => m.type === type);
  }

  /** [offset, length] of every message of `type` in `dir`, sorted by offset. */
  ranges(dir: Direction, type: MessageType): [number, number][] {
    return this.ofType(dir, type).map((m): [number, number] => [m.offset!, m.length!]).sort((a, b) => a[0] - b[0]);
  }

  /** Fails unless `dir` starts with `first`, ends with `last`, and has only `then`'s types between. */
  assertSequence(dir: Direction, expected: { first: MessageType[]; then: MessageType[]; last?: MessageType[] }): void {
    const types = this.types(dir);
    const head = types.slice(0, expected.first.length);
    assert.deepEqual(head, expected.first, `${dir}: first messages`);
    const tailLength = expected.last?.length ?? 0;
    const middle = types.slice(expected.first.length, types.length - tailLength);
    const allowed = new Set<string>(expected.then);
    const stray = middle.filter((t) => !allowed.has(t));
    assert.deepEqual(stray, [], `${dir}: only ${expected.then.join(", ")} after ${expected.first.join(", ")} (got ${JSON.stringify(this.countByType(dir))})`);
    if (expected.last) assert.deepEqual(types.slice(types.length - tailLength), expected.last, `${dir}: last messages`);
  }
}
