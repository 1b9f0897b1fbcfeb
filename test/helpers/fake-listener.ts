/**
 * A hand-written listener for client tests: a real TCP server on 127.0.0.1 and a real
 * acceptSecure with its own host key; what happens after the handshake is the test's
 * `serve` (silence, lies, a close). Every connection's work is awaited by close().
 */
import fs from "node:fs";
import { createServer, type Socket } from "node:net";
import { decode, encode } from "../../protocol/codec.ts";
import type { Message } from "../../protocol/messages.ts";
import { acceptSecure, type SecureConnection } from "../../src/net/secure-connection.ts";
import { fingerprint } from "../../src/trust/keys.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";

export interface FakeListener {
  port: number;
  hostKey: KeyPair;
  /** The host key's fingerprint, for the client's --host-key. */
  fingerprint: string;
  /** Sockets accepted so far, in order. */
  sockets: Socket[];
  close(): Promise<void>;
}

export async function startFakeListener(options: {
  /** Decides on the client's key after message 3 (default: any key is welcome). */
  authorize?: (socket: Socket) => boolean | Promise<boolean>;
  /** Runs the session once the handshake is done; the connection is disposed afterwards. */
  serve?: (conn: SecureConnection, socket: Socket) => Promise<void>;
}): Promise<FakeListener> {
  const hostKey = generateKeyPair();
  const sockets: Socket[] = [];
  const work = new Set<Promise<void>>();
  const server = createServer((socket) => {
    socket.on("error", () => {});
    sockets.push(socket);
    const p = (async () => {
      const conn = await acceptSecure(socket, { staticKey: hostKey, authorize: () => options.authorize?.(socket) ?? true });
      try {
        await options.serve?.(conn, socket);
      } finally {
        await conn[Symbol.asyncDispose]().catch(() => {});
      }
    })().catch(() => {});
    work.add(p);
    p.finally(() => work.delete(p));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    hostKey,
    fingerprint: fingerprint(hostKey.publicKey),
    sockets,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
      await Promise.allSettled([...work]);
    },
  };
}

/** The next message, or null at the end (orderly or not). */
export async function receiveMessage(conn: SecureConnection): Promise<Message | null> {
  try {
    const rec = await conn.channel.receive();
    return rec === null ? null : decode(rec);
  } catch {
    return null;
  }
}

export function sendMessage(conn: SecureConnection, m: Message): Promise<void> {
  return conn.channel.send(encode(m)).catch(() => {});
}

/** Reads (and drops) everything until the client goes away: a listener that never answers. */
export async function drain(conn: SecureConnection): Promise<void> {
  while ((await receiveMessage(conn)) !== null);
}

/**
 * The kernel's timer for the established TCP socket from local port `port` to remote port
 * `peerPort` (from /proc/net/tcp): "keepalive" when SO_KEEPALIVE is set and nothing else is
 * pending on an idle connection. Both ports and the state are matched: an earlier connection
 * from the same ephemeral port may linger in TIME_WAIT, whose timer reads as "other".
 */
export function tcpTimer(port: number, peerPort: number): "none" | "retransmit" | "keepalive" | "other" | undefined {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const peerHex = peerPort.toString(16).toUpperCase().padStart(4, "0");
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local, f[2] remote address:port; f[3] the state (01: ESTABLISHED).
      if (f.length < 6 || !f[1].endsWith(`:${hex}`) || !f[2].endsWith(`:${peerHex}`) || f[3] !== "01") continue;
      const timer = f[5].split(":")[0];
      return timer === "00" ? "none" : timer === "01" ? "retransmit" : timer === "02" ? "keepalive" : "other";
    }
  }
  return undefined;
}
