/**
 * The client's side of the request/reply multiplexer. Every request gets a fresh cookie;
 * the receive loop routes each reply to its request by cookie.
 *
 * Invariants:
 * - A request expects exactly the reply types listed in REPLIES; anything else, or a reply
 *   to no pending cookie, is a ProtocolError that fails the whole session.
 * - An ERROR reply rejects its request with a RemoteError.
 * - A streaming request (READ_DIFF) receives DATA, ZERO, PATCH and REFINE in order and ends
 *   with RANGE_DONE; the handler's promise is awaited before the next record is read, which is
 *   the back-pressure towards the server.
 * - `activity` brackets every stretch in which no request is pending: the server owes us
 *   nothing then, so its silence is not idleness (the idle timeout counts only while it owes
 *   a reply). begin() and end() alternate, starting with begin() in the constructor.
 */
import { decode, encode, encodeParts, ProtocolError } from "../../protocol/codec.ts";
import type { MessageType } from "../../protocol/constants.ts";
import type {
  AckMessage,
  CommitOkMessage,
  DataMessage,
  Message,
  OpenOkMessage,
  PatchMessage,
  RangeDoneMessage,
  RefineMessage,
  SigsReplyMessage,
  SubDigestsMessage,
  ZeroMessage,
} from "../../protocol/messages.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import { asError, RemoteError } from "../util/errors.ts";
import { recordLength } from "../util/record-parts.ts";
import { WireCounters } from "./wire-counters.ts";

type Request = Exclude<Message, { type: "OPEN_OK" | "SIGS_REPLY" | "ACK" | "COMMIT_OK" | "ERROR" | "SUB_DIGESTS" }>;
/** What a READ_DIFF stream carries before its RANGE_DONE. */
export type StreamChunk = DataMessage | ZeroMessage | PatchMessage | RefineMessage;
type RequestOf<T extends Request["type"]> = Omit<Extract<Request, { type: T }>, "cookie">;

interface ReplyOf {
  OPEN: OpenOkMessage;
  SIGS: SigsReplyMessage;
  DATA: AckMessage;
  ZERO: AckMessage;
  RANGE_DONE: AckMessage;
  FLUSH: AckMessage;
  COMMIT: CommitOkMessage;
  REFINE: SubDigestsMessage;
  PATCH: AckMessage;
}

const REPLIES: Record<Request["type"], readonly MessageType[]> = {
  OPEN: ["OPEN_OK"],
  SIGS: ["SIGS_REPLY"],
  DATA: ["ACK"],
  ZERO: ["ACK"],
  RANGE_DONE: ["ACK"],
  FLUSH: ["ACK"],
  COMMIT: ["COMMIT_OK"],
  READ_DIFF: ["DATA", "ZERO", "PATCH", "REFINE", "RANGE_DONE"],
  REFINE: ["SUB_DIGESTS"],
  PATCH: ["ACK"],
};

/** IdleTimeoutChannel's activity: while begun, a quiet peer is not idle. */
export interface Activity {
  begin(): void;
  end(): void;
}

interface Pending {
  request: Request["type"];
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  onChunk?: (m: StreamChunk) => Promise<void>;
}

export class ClientConnection {
  readonly wire = new WireCounters();
  #channel: RecordChannel;
  #pending = new Map<number, Pending>();
  #nextCookie = 1;
  #failure: Error | undefined;
  #onFailure: (e: Error) => void;
  #activity: Activity | undefined;
  readonly done: Promise<void>;

  constructor(channel: RecordChannel, options: { onFailure: (e: Error) => void; activity?: Activity }) {
    this.#channel = channel;
    this.#onFailure = options.onFailure;
    this.#activity = options.activity;
    this.#activity?.begin();
    this.done = this.#receiveLoop();
  }

  request<T extends keyof ReplyOf>(msg: RequestOf<T>): Promise<ReplyOf[T]> {
    return this.#send(msg as RequestOf<Request["type"]>) as Promise<ReplyOf[T]>;
  }

  /** READ_DIFF: onChunk gets each DATA/ZERO reply; resolves with the RANGE_DONE. */
  stream(msg: RequestOf<"READ_DIFF">, onChunk: (m: StreamChunk) => Promise<void>): Promise<RangeDoneMessage> {
    return this.#send(msg, onChunk) as Promise<RangeDoneMessage>;
  }

  /** Pull: the answer to a REFINE inside a READ_DIFF stream (not a request: it names that stream's cookie). */
  answer(msg: SubDigestsMessage): void {
    if (this.#failure) return;
    const rec = encode(msg);
    this.wire.sent(rec.length, msg.type);
    this.#channel.send(rec).catch((e) => this.fail(e));
  }

  /** Fails every pending request and closes the channel. */
  fail(e: Error): void {
    if (this.#failure) return;
    this.#failure = e;
    const pending = [...this.#pending.values()];
    this.#forgetAll();
    for (const p of pending) p.reject(e);
    this.#channel.close(e);
    this.#onFailure(e);
  }

  close(): void {
    this.#channel.close();
  }

  #send(msg: RequestOf<Request["type"]>, onChunk?: Pending["onChunk"]): Promise<Message> {
    if (this.#failure) return Promise.reject(this.#failure);
    const cookie = this.#nextCookie++;
    // A DATA payload goes to the channel as its own part: sealed, never concatenated.
    const rec = encodeParts({ ...msg, cookie } as Message);
    return new Promise<Message>((resolve, reject) => {
      if (this.#pending.size === 0) this.#activity?.end();
      this.#pending.set(cookie, { request: msg.type, resolve, reject, onChunk });
      this.wire.sent(recordLength(rec), msg.type);
      this.#channel.send(rec).catch((e) => this.fail(e));
    });
  }

  #forget(cookie: number): void {
    if (this.#pending.delete(cookie) && this.#pending.size === 0) this.#activity?.begin();
  }

  #forgetAll(): void {
    if (this.#pending.size === 0) return;
    this.#pending.clear();
    this.#activity?.begin();
  }

  async #receiveLoop(): Promise<void> {
    try {
      for (;;) {
        const rec = await this.#channel.receive();
        if (rec === null) {
          if (this.#pending.size > 0) {
            throw new ProtocolError(`the server ended the session with ${this.#pending.size} requests unanswered`);
          }
          return;
        }
        const msg = decode(rec);
        this.wire.received(rec.length, msg.type);
        const p = this.#pending.get(msg.cookie);
        if (!p) throw new ProtocolError(`${msg.type} answers no pending request (cookie ${msg.cookie})`);
        if (msg.type === "ERROR") {
          this.#forget(msg.cookie);
          p.reject(new RemoteError(msg.code, msg.message));
          continue;
        }
        if (!REPLIES[p.request].includes(msg.type)) {
          throw new ProtocolError(`${msg.type} is not a reply to ${p.request}`);
        }
        if ((msg.type === "DATA" || msg.type === "ZERO" || msg.type === "PATCH" || msg.type === "REFINE") && p.onChunk) {
          await p.onChunk(msg);
          continue;
        }
        this.#forget(msg.cookie);
        p.resolve(msg);
      }
    } catch (e) {
      this.fail(asError(e));
    }
  }
}
