/**
 * TCP relays that sit between a client and a listener on 127.0.0.1, for tests of what a
 * network attacker can do:
 * - TamperRelay passes the handshake through, then cuts the client's records (u32 word, END
 *   bit, length) and replaces the one its plan names; it forwards nothing from the client
 *   after that, so the listener must notice by itself.
 * - MitmRelay terminates each client's Noise session with its own key and opens its own to
 *   the listener, carrying records between the two.
 */
import { Buffer } from "node:buffer";
import { connect, createServer, type Server, type Socket } from "node:net";
import { HANDSHAKE_LENGTH_SIZE, PREAMBLE_SIZE, XX_MESSAGE_SIZES } from "../../protocol/constants.ts";
import type { RecordChannel } from "../../src/net/record-channel.ts";
import { acceptSecure, connectSecure, type SecureConnection } from "../../src/net/secure-connection.ts";
import type { KeyPair } from "../../src/noise/x25519.ts";

/** Client → listener bytes of an XX handshake: preamble, messages 1 and 3, each u16-framed. */
export const CLIENT_HANDSHAKE_BYTES = PREAMBLE_SIZE + (HANDSHAKE_LENGTH_SIZE + XX_MESSAGE_SIZES[0]) +
  (HANDSHAKE_LENGTH_SIZE + XX_MESSAGE_SIZES[2]);

export interface Tamper {
  /** Index of the client's record (after the handshake) to replace: 0 = OPEN. */
  index: number;
  /** The bytes sent instead of that frame; `end`: then half-close toward the listener. */
  replace: (frame: Buffer, earlier: Buffer[]) => { bytes: Buffer; end?: boolean };
}

export interface RelayedConnection {
  /** The client's frames after the handshake, as it sent them (up to and including the tampered one). */
  frames: Buffer[];
  /** Every byte the client sent, in order. */
  raw: Buffer[];
  /** When the tamper was applied (ms), if it was. */
  tamperedAt?: number;
  /** Resolves with the time (ms) the listener ended or closed its side of the connection. */
  upstreamClosed: Promise<number>;
  /** True if the relay itself closed toward the listener (the client ended first). */
  relayClosedUpstream: boolean;
}

export class TamperRelay {
  #server: Server;
  #sockets = new Set<Socket>();
  readonly port: number;
  readonly connections: RelayedConnection[] = [];
  /** The plan for the next connection accepted; undefined = pass everything through. */
  next: Tamper | undefined;

  private constructor(server: Server, listenerPort: number) {
    this.#server = server;
    this.port = (server.address() as { port: number }).port;
    server.on("connection", (client: Socket) => this.#relay(client, listenerPort));
  }

  static async start(listenerPort: number): Promise<TamperRelay> {
    const server = createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return new TamperRelay(server, listenerPort);
  }

  #relay(client: Socket, listenerPort: number): void {
    const plan = this.next;
    this.next = undefined;
    const up = connect({ host: "127.0.0.1", port: listenerPort, allowHalfOpen: true });
    for (const s of [client, up]) {
      s.on("error", () => {});
      this.#sockets.add(s);
      s.once("close", () => this.#sockets.delete(s));
    }
    let resolveClosed!: (t: number) => void;
    const state: RelayedConnection = {
      frames: [],
      raw: [],
      upstreamClosed: new Promise((r) => (resolveClosed = r)),
      relayClosedUpstream: false,
    };
    this.connections.push(state);
    let handshakeLeft = CLIENT_HANDSHAKE_BYTES;
    let pending = Buffer.alloc(0);
    let done = false; // after the tamper, nothing more from the client reaches the listener

    client.on("data", (chunk: Buffer) => {
      state.raw.push(Buffer.from(chunk));
      if (done) return;
      if (handshakeLeft > 0) {
        const n = Math.min(handshakeLeft, chunk.length);
        up.write(chunk.subarray(0, n));
        handshakeLeft -= n;
        chunk = chunk.subarray(n);
      }
      pending = Buffer.concat([pending, chunk]);
      while (!done && pending.length >= 4) {
        const length = pending.readUInt32BE(0) & 0x7fff_ffff;
        if (pending.length < 4 + length) break;
        const frame = Buffer.from(pending.subarray(0, 4 + length));
        pending = pending.subarray(4 + length);
        const index = state.frames.length;
        state.frames.push(frame);
        if (plan !== undefined && index === plan.index) {
          const { bytes, end } = plan.replace(Buffer.from(frame), state.frames.slice(0, index));
          done = true;
          state.tamperedAt = Date.now();
          up.write(bytes);
          if (end) up.end();
        } else {
          up.write(frame);
        }
      }
    });
    client.on("end", () => {
      if (!done) {
        state.relayClosedUpstream = true;
        up.end();
      }
    });
    client.on("close", () => {
      // Before a tamper, the client going away ends the relayed connection; after it, the
      // listener must close on its own (the test checks that it does, promptly).
      if (!done) {
        state.relayClosedUpstream = true;
        up.destroy();
      }
    });
    up.on("data", (chunk: Buffer) => client.write(chunk));
    // The listener ending its side (FIN, or a reset: close) is what the tamper tests wait for.
    up.on("end", () => {
      resolveClosed(Date.now());
      client.end();
      if (done) up.end();
    });
    up.on("close", () => {
      resolveClosed(Date.now());
      client.end();
    });
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    for (const s of this.#sockets) s.destroy();
    await closed;
  }
}

/** Terminates each client's Noise session with its own key and opens its own to the listener. */
export class MitmRelay {
  #server: Server;
  #sockets = new Set<Socket>();
  #tasks = new Set<Promise<void>>();
  readonly port: number;
  /** Records carried from a client to the listener. */
  forwarded = 0;
  /** Client handshakes the relay completed. */
  fooled = 0;

  private constructor(server: Server, listenerPort: number, key: KeyPair) {
    this.#server = server;
    this.port = (server.address() as { port: number }).port;
    server.on("connection", (client: Socket) => {
      const task = this.#relay(client, listenerPort, key).catch(() => {});
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    });
  }

  static async start(listenerPort: number, key: KeyPair): Promise<MitmRelay> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return new MitmRelay(server, listenerPort, key);
  }

  async #relay(client: Socket, listenerPort: number, key: KeyPair): Promise<void> {
    client.on("error", () => {});
    this.#sockets.add(client);
    const up = connect(listenerPort, "127.0.0.1");
    up.on("error", () => {});
    this.#sockets.add(up);
    // Both sessions at once, as an eager attacker would.
    const [down, upstream] = await Promise.allSettled([
      acceptSecure(client, { staticKey: key, authorize: () => true, timeoutMs: 5000 }),
      connectSecure(up, { staticKey: key, verifyHost: () => true, timeoutMs: 5000 }),
    ]);
    if (down.status !== "fulfilled" || upstream.status !== "fulfilled") {
      for (const r of [down, upstream]) {
        if (r.status === "fulfilled") await r.value[Symbol.asyncDispose]().catch(() => {});
      }
      client.destroy();
      up.destroy();
      return;
    }
    this.fooled++;
    const pump = async (from: RecordChannel, to: RecordChannel, count: boolean) => {
      try {
        for (;;) {
          const r = await from.receive();
          if (r === null) {
            to.close();
            return;
          }
          if (count) this.forwarded++;
          await to.send(r);
        }
      } catch (e) {
        to.close(e as Error);
        from.close(e as Error);
      }
    };
    const a: SecureConnection = down.value;
    const b: SecureConnection = upstream.value;
    await Promise.all([pump(a.channel, b.channel, true), pump(b.channel, a.channel, false)]);
    await Promise.allSettled([a[Symbol.asyncDispose](), b[Symbol.asyncDispose]()]);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    for (const s of this.#sockets) s.destroy();
    await closed;
    await Promise.allSettled([...this.#tasks]);
  }
}
