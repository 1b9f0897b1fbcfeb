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
import { asError } from "../util/errors.ts";

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
 * 4. The responder checks the initiator's static key (authorize) after message 3. The
 *    handshake is complete then, so it answers through the record layer: one empty record
 *    means accepted (connectSecure resolves only after receiving it); the END record means
 *    refused (connectSecure throws a HandshakeRefusedError). END reveals nothing a silent
 *    close would not, and unlike an EOF it cannot be forged or caused by a listener dying.
 * Every other failure is a silent close: the socket is destroyed and the peer receives no
 * error message (a wrong pairing code among them: the two ends' keys differ, so no record
 * could be read). The local caller gets an Error saying why.
 *
 * The responder may also be given a deadline for the first message (`firstMessageTimeoutMs`:
 * the preamble and handshake message 1), shorter than the whole handshake's, so a socket
 * that says nothing holds a listener's handshake slot only briefly.
 */

/** Bytes a peer may send ahead during the handshake (it needs < 300). */
const MAX_HANDSHAKE_BUFFER = 4096;
/** How long a refusing responder waits for its END record to reach the peer before it closes. */
const REFUSAL_LINGER_MS = 1000;

/**
 * The responder refused our key after message 3, with its encrypted END record: the one
 * failure that means "not authorized" (an EOF, a reset or a bad record there does not).
 */
export class HandshakeRefusedError extends Error {
  override name = "HandshakeRefusedError";
  readonly refused = true;
}

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
  /** Decides whether the initiator's static key may connect; false = the END refusal. */
  authorize: (remoteStatic: Uint8Array, info: { paired: boolean }) => boolean | Promise<boolean>;
  /** The preamble and handshake message 1 must arrive within this time (default: no extra limit). */
  firstMessageTimeoutMs?: number;
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

/** The Noise protocol of a handshake mode, and the exact sizes of its three messages. */
function noiseOf(paired: boolean): { name: string; sizes: readonly number[] } {
  return paired
    ? { name: PAIRING_PROTOCOL_NAME, sizes: XXPSK3_MESSAGE_SIZES }
    : { name: PROTOCOL_NAME, sizes: XX_MESSAGE_SIZES };
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

/** What `guarded` gives its steps. */
interface Guard {
  reader: SocketReader;
  /** Fails the handshake now with this reason (as the timeout does). */
  fail: (reason: Error) => void;
  /** Throws once the handshake has failed (timed out, aborted): later steps must not act. */
  check: () => void;
}

/**
 * Runs `steps` under the timeout and abort signal; on any failure destroys the socket
 * without sending anything (the silent close) and rethrows as "Cannot <what>: <why>"
 * (a HandshakeRefusedError stays one).
 */
async function guarded<T>(
  socket: Socket,
  options: SecureOptions & { what: string },
  steps: (guard: Guard) => Promise<T>,
): Promise<T> {
  const peer = options.peerName ?? peerName(socket);
  const reader = new SocketReader(socket, { maxBuffered: MAX_HANDSHAKE_BUFFER });
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  let failure: Error | undefined;
  let fail!: (reason: Error) => void;
  const stop = new Promise<never>((_, reject) => {
    fail = (reason) => {
      failure ??= reason;
      reject(reason);
    };
    timer = setTimeout(() => fail(new Error(`the handshake timed out after ${timeoutMs} ms`)), timeoutMs);
    onAbort = () => fail(asError(options.signal?.reason ?? new Error("the handshake was aborted")));
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
  });
  stop.catch(() => {});
  const check = () => {
    if (failure !== undefined) throw failure;
  };
  try {
    return await Promise.race([steps({ reader, fail, check }), stop]);
  } catch (error) {
    failure ??= asError(error);
    reader.detach();
    socket.on("error", () => {}); // a late reset must not become an uncaught error
    socket.destroy();
    const why = error instanceof Error ? error.message : String(error);
    const message = `Cannot ${options.what} ${peer}: ${why}`;
    if (error instanceof HandshakeRefusedError) throw new HandshakeRefusedError(message, { cause: error });
    throw new Error(message, { cause: error });
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
  return guarded(socket, { ...options, what: "open a secure connection to" }, async ({ reader }) => {
    const paired = options.psk !== undefined;
    const clear = encodePreamble(paired ? MODE_PAIRING : MODE_XX);
    const { name, sizes } = noiseOf(paired);
    const hs = new HandshakeState(name, {
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
    // The responder's first record: empty = accepted, END (receive() yields null) = refused.
    let accepted: Uint8Array | null;
    try {
      accepted = await channel.receive();
    } catch (error) {
      channel.close(asError(error));
      throw new Error(`the listener closed the connection during the handshake (${asError(error).message})`, { cause: error });
    }
    if (accepted === null) {
      channel.close();
      throw new HandshakeRefusedError(
        `the listener refused our key ${fingerprint(options.staticKey.publicKey)}: not accepted by its authorized_keys`,
      );
    }
    if (accepted.length !== 0) {
      const error = new Error(`the listener's first record holds ${accepted.length} bytes, not the empty acceptance`);
      channel.close(error);
      throw error;
    }
    return connection({ channel, handshakeHash, remoteStatic, paired });
  });
}

/** Responder side: runs the handshake over an accepted socket. */
export function acceptSecure(socket: Socket, options: AcceptOptions): Promise<SecureConnection> {
  return guarded(socket, { ...options, what: "accept a secure connection from" }, async ({ reader, fail, check }) => {
    const firstMs = options.firstMessageTimeoutMs;
    const first = firstMs === undefined ? undefined : setTimeout(
      () => fail(new Error(`the first handshake message did not arrive within ${firstMs} ms`)),
      firstMs,
    );
    let clear: Buffer;
    let paired: boolean;
    let hs: HandshakeState;
    try {
      clear = await reader.read(PREAMBLE_SIZE);
      paired = parsePreamble(clear) === MODE_PAIRING;
      if (paired && options.psk === undefined) throw new Error("the client asked for pairing, which is not enabled");
      hs = new HandshakeState(noiseOf(paired).name, {
        initiator: false,
        prologue: concat(clear, options.prologue),
        staticKeyPair: options.staticKey,
        psk: paired ? options.psk : undefined,
      });
      hs.readMessage(await readFrame(reader, handshakeFrameFormat(noiseOf(paired).sizes[0])));
    } finally {
      clearTimeout(first);
    }
    check();
    socket.write(encodeHandshakeFrame(hs.writeMessage()));
    hs.readMessage(await readFrame(reader, handshakeFrameFormat(noiseOf(paired).sizes[2])));
    const remoteStatic = hs.remoteStatic!;
    const authorized = await options.authorize(remoteStatic, { paired });
    check(); // timed out or aborted while authorize() ran: nothing more goes out
    const { channel, handshakeHash } = makeChannel(socket, hs, reader, options);
    if (!authorized) {
      // The END record, then the orderly close: the socket lingers until the peer closes or
      // REFUSAL_LINGER_MS pass (then guarded destroys it), so the END is not lost to a reset.
      channel.close();
      let linger: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([channel[Symbol.asyncDispose](), new Promise((r) => (linger = setTimeout(r, REFUSAL_LINGER_MS)))]);
      clearTimeout(linger);
      throw new Error(`the client's key ${fingerprint(remoteStatic)} is not authorized`);
    }
    await channel.send(new Uint8Array(0));
    return connection({ channel, handshakeHash, remoteStatic, paired });
  });
}
