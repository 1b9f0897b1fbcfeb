/**
 * A server session (serveSession) on a real file, driven by hand: the test sends whatever
 * messages it likes and reads every reply, telling an orderly END from a closed connection.
 *
 * - `serveFile` opens the file as the listener would (openDestination for push,
 *   openSource for pull), wrapped in a RecordingStorage, over memoryPair or over a real TCP
 *   connection (`tcpChannelPair`: two NoiseRecordChannels with matching cipher states).
 * - `Driver.next()` is a message, "END" (the server ended in order) or "CLOSED" (it closed the
 *   connection: no END; over TCP the peer sees EOF without END).
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";
import { decode, encode } from "../../protocol/codec.ts";
import { PROTOCOL_VERSION } from "../../protocol/constants.ts";
import type { Message, OpenMessage } from "../../protocol/messages.ts";
import type { WorkerPool } from "../../src/engine/worker-pool.ts";
import { NoiseRecordChannel, type NoiseRecordChannelOptions } from "../../src/net/noise-record-channel.ts";
import type { RecordChannel } from "../../src/net/record-channel.ts";
import { cipherFunction } from "../../src/noise/cipher-function.ts";
import { CipherState } from "../../src/noise/cipher-state.ts";
import { memoryPair } from "../../src/session/memory-pair.ts";
import { type ServeOptions, serveSession, type ServerSessionResult } from "../../src/session/server-session.ts";
import { openDestination } from "../../src/storage/open-destination.ts";
import { openSource } from "../../src/storage/open-source.ts";
import type { Storage } from "../../src/storage/storage.ts";
import { RecordingStorage } from "./recording-storage.ts";

export type Reply = Message | "END" | "CLOSED";

export class Driver {
  readonly channel: RecordChannel;

  constructor(channel: RecordChannel) {
    this.channel = channel;
  }

  /** Sends one message; false once the connection is gone. */
  async send(m: Message): Promise<boolean> {
    return await this.channel.send(encode(m)).then(() => true, () => false);
  }

  async next(): Promise<Reply> {
    try {
      const rec = await this.channel.receive();
      return rec === null ? "END" : decode(rec);
    } catch {
      return "CLOSED";
    }
  }

  /** Every reply until the session ends, then how it ended. */
  async drain(): Promise<{ messages: Message[]; end: "END" | "CLOSED" }> {
    const messages: Message[] = [];
    for (;;) {
      const r = await this.next();
      if (r === "END" || r === "CLOSED") return { messages, end: r };
      messages.push(r);
    }
  }

  /** The next reply, which must be of `type`. */
  async expect<T extends Message["type"]>(type: T): Promise<Extract<Message, { type: T }>> {
    const r = await this.next();
    if (typeof r === "string" || r.type !== type) {
      throw new Error(`expected ${type}, got ${typeof r === "string" ? r : `${r.type} ${r.type === "ERROR" ? r.message : ""}`}`);
    }
    return r as Extract<Message, { type: T }>;
  }
}

/** An OPEN with 4 KiB blocks, HMAC-SHA-256 digests and the given key (default all zero). */
export function openRequest(o: Partial<OpenMessage> & { mode: "push" | "pull"; size: number }): OpenMessage {
  return {
    type: "OPEN",
    cookie: 1,
    version: PROTOCOL_VERSION,
    hash: "hmac-sha256",
    blockSize: 4096,
    dryRun: false,
    clientZstd: false,
    key: new Uint8Array(32),
    name: "f.img",
    ...o,
  };
}

export interface ServedFile {
  driver: Driver;
  /** The server's store, once OPEN opened it. */
  store: () => RecordingStorage | undefined;
  result: Promise<ServerSessionResult>;
}

/**
 * serveSession on `file`: push opens it as a destination (created if missing; read-only in a
 * dry run), pull as a source. `wrap` may replace the store (a full disk, a slow one).
 */
export function serveFile(
  file: string,
  options: {
    pool: WorkerPool;
    channels?: [RecordChannel, RecordChannel];
    wrap?: (store: Storage) => Storage;
  } & Partial<Omit<ServeOptions, "open" | "pool">>,
): ServedFile {
  const [clientEnd, serverEnd] = options.channels ?? memoryPair();
  let store: RecordingStorage | undefined;
  const result = serveSession(serverEnd, {
    ...options,
    pool: options.pool,
    open: async (req) => {
      const opened = req.mode === "push"
        ? await openDestination(file, { create: true, readOnly: req.dryRun })
        : await openSource(file);
      store = new RecordingStorage(options.wrap ? options.wrap(opened) : opened);
      return store;
    },
  });
  return { driver: new Driver(clientEnd), store: () => store, result };
}

/**
 * Two NoiseRecordChannels over a real TCP connection on 127.0.0.1, with matching cipher
 * states (no handshake): what one end sends the other receives, with the record layer's
 * END and EOF rules. [client, server].
 */
export async function tcpChannelPair(options: Partial<Omit<NoiseRecordChannelOptions, "send" | "receive">> = {}): Promise<[NoiseRecordChannel, NoiseRecordChannel]> {
  const listener = createServer({ pauseOnConnect: true });
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const accepted = once(listener, "connection");
  const client = connect((listener.address() as { port: number }).port, "127.0.0.1");
  await once(client, "connect");
  const [server] = (await accepted) as [Socket];
  listener.close();
  const chacha = cipherFunction("ChaChaPoly");
  const up = randomBytes(32);
  const down = randomBytes(32);
  return [
    new NoiseRecordChannel(client, { ...options, send: new CipherState(chacha, up), receive: new CipherState(chacha, down) }),
    new NoiseRecordChannel(server, { ...options, send: new CipherState(chacha, down), receive: new CipherState(chacha, up) }),
  ];
}
