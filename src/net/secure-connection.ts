import type { Socket } from "node:net";
import {
  HANDSHAKE_TIMEOUT_MS,
  MODE_PAIRING,
  MODE_XX,
  PAIRING_PROTOCOL_NAME,
  PREAMBLE_SIZE,
  PROTOCOL_NAME,
  XX_MESSAGE_SIZES,
  XXPSK3_MESSAGE_SIZES,
} from "../../protocol/constants.ts";
import type { FrameFormat } from "../../protocol/frame-reader.ts";
import { encodeHandshakeFrame, handshakeFrameFormat } from "../../protocol/handshake-frame.ts";
import { encodePreamble, parsePreamble } from "../../protocol/preamble.ts";
import { HandshakeState } from "../noise/handshake-state.ts";
import { fingerprint } from "../trust/keys.ts";
import { NoiseRecordChannel, type NoiseRecordChannelOptions } from "./noise-record-channel.ts";
import { SocketReader } from "./socket-reader.ts";
import type { KeyPair } from "../noise/x25519.ts";

/**
 * Opening an authenticated, encrypted connection (spec §1; byte layouts in protocol/),
 * in this order:
 * 1. initiator → responder: the clear preamble (MODE_XX or MODE_PAIRING). Nothing else is clear.
 * 2. Noise handshake, each message u16-framed with its exact size (XX_MESSAGE_SIZES or
 *    XXPSK3_MESSAGE_SIZES), checked before the message is read. The prologue is the
 *    preamble followed by the caller's prologue, so any byte exchanged before the handshake
 *    is authenticated by it.
 * 3. The initiator checks the responder's static key (verifyHost) after message 2, before
 *    message 3 reveals its own static key.
 * 4. The responder checks the initiator's static key (authorize) after message 3, then sends
 *    one empty record as its acceptance; connectSecure resolves only after receiving it.
 * Every failure before step 4 completes is a silent close: the socket is destroyed and the
 * peer receives no error message. The local caller gets an Error saying why.
 */

/** Bytes a peer may send ahead during the handshake (it needs < 300). */
const MAX_HANDSHAKE_BUFFER = 4096;

export interface SecureOptions {
  /** Our long-term X25519 key pair. */
  staticKey: KeyPair;
  /** Extra bytes both sides must agree on (appended to the preamble in the Noise prologue). */
  prologue?: Uint8Array;
  /** The whole handshake, acceptance included, must finish within this time. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** How errors name the peer, e.g. "backup:7070"; default: the socket's remote address. */
  peerName?: string;
  /** Record layer tuning (tests). */
  channel?: Omit<NoiseRecordChannelOptions, "send" | "receive" | "initialData">;
}

export interface ConnectOptions extends SecureOptions {
  /** 32-byte pairing key: use XXpsk3 instead of XX. */
  psk?: Uint8Array;
  /** Decides whether the responder's static key is the host we meant; false = silent close. */
  verifyHost: (remoteStatic: Uint8Array) => boolean | Promise<boolean>;
  /** Ephemeral key for tests only. */
  ephemeralKey?: KeyPair;
}

export interface AcceptOptions extends SecureOptions {
  /** When set, clients may pair with XXpsk3 using this 32-byte key; otherwise only XX. */
  psk?: Uint8Array;
  /** Decides whether the initiator's static key may connect; false = silent close. */
  authorize: (remoteStatic: Uint8Array, info: { paired: boolean }) => boolean | Promise<boolean>;
}

export interface SecureConnection extends AsyncDisposable {
  channel: NoiseRecordChannel;
  /** The peer's authenticated static public key. */
  remoteStatic: Uint8Array;
  /** The Noise handshake hash: identical on both ends, unique per connection. */
  handshakeHash: Uint8Array;
  /** True when the XXpsk3 pairing handshake was used. */
  paired: boolean;
}

function concat(a: Uint8Array, b: Uint8Array | undefined): Uint8Array {
  if (b === undefined || b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Reads one handshake frame; its length word is checked before the body is read. */
async function readFrame(reader: SocketReader, format: FrameFormat): Promise<Buffer> {
  const word = (await reader.read(format.wordSize)).readUIntBE(0, format.wordSize);
  return reader.read(format.bodyLength(word));
}

function peerName(socket: Socket): string {
  return socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : "the peer";
}

/**
 * Runs `steps` under the timeout and abort signal; on any failure destroys the socket
 * without sending anything (the silent close) and rethrows as "Cannot <what>: <why>".
 */
async function guarded<T>(
  socket: Socket,
  options: SecureOptions & { what: string },
  steps: (reader: SocketReader) => Promise<T>,
): Promise<T> {
  const peer = options.peerName ?? peerName(socket);
  const reader = new SocketReader(socket, { maxBuffered: MAX_HANDSHAKE_BUFFER });
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the handshake timed out after ${timeoutMs} ms`)), timeoutMs);
    onAbort = () => reject(options.signal?.reason ?? new Error("the handshake was aborted"));
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
  });
  stop.catch(() => {});
  try {
    return await Promise.race([steps(reader), stop]);
  } catch (error) {
    reader.detach();
    socket.on("error", () => {}); // a late reset must not become an uncaught error
    socket.destroy();
    const why = error instanceof Error ? error.message : String(error);
    throw new Error(`Cannot ${options.what} ${peer}: ${why}`, { cause: error });
  } finally {
    clearTimeout(timer);
    if (onAbort) options.signal?.removeEventListener("abort", onAbort);
  }
}

function makeChannel(socket: Socket, hs: HandshakeState, reader: SocketReader, options: SecureOptions) {
  const keys = hs.split();
  const channel = new NoiseRecordChannel(socket, {
    ...options.channel,
    send: keys.send,
    receive: keys.receive,
    initialData: reader.detach(),
  });
  return { channel, handshakeHash: keys.handshakeHash };
}

function connection(
  parts: { channel: NoiseRecordChannel; handshakeHash: Uint8Array; remoteStatic: Uint8Array; paired: boolean },
): SecureConnection {
  return { ...parts, [Symbol.asyncDispose]: () => parts.channel[Symbol.asyncDispose]() };
}

/** Initiator side: runs the handshake over a connected (or connecting) socket. */
export function connectSecure(socket: Socket, options: ConnectOptions): Promise<SecureConnection> {
  return guarded(socket, { ...options, what: "open a secure connection to" }, async (reader) => {
    const paired = options.psk !== undefined;
    const clear = encodePreamble(paired ? MODE_PAIRING : MODE_XX);
    const sizes = paired ? XXPSK3_MESSAGE_SIZES : XX_MESSAGE_SIZES;
    const hs = new HandshakeState(paired ? PAIRING_PROTOCOL_NAME : PROTOCOL_NAME, {
      initiator: true,
      prologue: concat(clear, options.prologue),
      staticKeyPair: options.staticKey,
      ephemeralKeyPair: options.ephemeralKey,
      psk: options.psk,
    });
    socket.write(Buffer.concat([clear, encodeHandshakeFrame(hs.writeMessage())]));
    hs.readMessage(await readFrame(reader, handshakeFrameFormat(sizes[1])));
    const remoteStatic = hs.remoteStatic!;
    if (!(await options.verifyHost(remoteStatic))) {
      throw new Error(`the server's key ${fingerprint(remoteStatic)} is not the expected host key`);
    }
    socket.write(encodeHandshakeFrame(hs.writeMessage()));
    const { channel, handshakeHash } = makeChannel(socket, hs, reader, options);
    // The responder's first record is an empty acceptance; EOF here means it refused us.
    let accepted: Uint8Array | null;
    try {
      accepted = await channel.receive();
    } catch {
      accepted = null;
    }
    if (accepted === null || accepted.length !== 0) {
      channel.close(new Error("not accepted"));
      throw new Error(
        `the server closed the connection after the handshake: our key ${
          fingerprint(options.staticKey.publicKey)
        } is probably not authorized there`,
      );
    }
    return connection({ channel, handshakeHash, remoteStatic, paired });
  });
}

/** Responder side: runs the handshake over an accepted socket. */
export function acceptSecure(socket: Socket, options: AcceptOptions): Promise<SecureConnection> {
  return guarded(socket, { ...options, what: "accept a secure connection from" }, async (reader) => {
    const clear = await reader.read(PREAMBLE_SIZE);
    const paired = parsePreamble(clear) === MODE_PAIRING;
    if (paired && options.psk === undefined) throw new Error("the client asked for pairing, which is not enabled");
    const hs = new HandshakeState(paired ? PAIRING_PROTOCOL_NAME : PROTOCOL_NAME, {
      initiator: false,
      prologue: concat(clear, options.prologue),
      staticKeyPair: options.staticKey,
      psk: paired ? options.psk : undefined,
    });
    const sizes = paired ? XXPSK3_MESSAGE_SIZES : XX_MESSAGE_SIZES;
    hs.readMessage(await readFrame(reader, handshakeFrameFormat(sizes[0])));
    socket.write(encodeHandshakeFrame(hs.writeMessage()));
    hs.readMessage(await readFrame(reader, handshakeFrameFormat(sizes[2])));
    const remoteStatic = hs.remoteStatic!;
    if (!(await options.authorize(remoteStatic, { paired }))) {
      throw new Error(`the client's key ${fingerprint(remoteStatic)} is not authorized`);
    }
    const { channel, handshakeHash } = makeChannel(socket, hs, reader, options);
    await channel.send(new Uint8Array(0));
    return connection({ channel, handshakeHash, remoteStatic, paired });
  });
}
