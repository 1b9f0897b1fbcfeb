/**
 * A client that speaks the protocol by hand over a real secure connection, for tests that
 * must send what a well-behaved client never would (and read every reply themselves).
 */
import path from "node:path";
import { decode } from "../../protocol/codec.ts";
import { PROTOCOL_VERSION } from "../../protocol/constants.ts";
import type { Message } from "../../protocol/messages.ts";
import { dial } from "../../src/net/dial.ts";
import type { SecureConnection } from "../../src/net/secure-connection.ts";
import type { KeyPair } from "../../src/noise/x25519.ts";

/** Dials a listener on 127.0.0.1 (from `localAddress`, e.g. 127.0.0.9), trusting its host key (known_hosts in `dir`). */
export async function rawConnect(
  server: { listener: { port: number } },
  key: KeyPair,
  dir: string,
  pairCode?: string,
  options: { localAddress?: string } = {},
): Promise<SecureConnection> {
  return await dial({
    localAddress: options.localAddress,
    host: "127.0.0.1",
    port: server.listener.port,
    staticKey: key,
    knownHostsFile: path.join(dir, "known_hosts"),
    acceptNew: true,
    timeoutMs: 5000,
    pairCode,
  });
}

/** An OPEN with an all-zero hash key and 4 KiB blocks. */
export function openMessage(o: { mode: "push" | "pull"; name: string; size: number; dryRun: boolean }): Message {
  return {
    type: "OPEN",
    cookie: 1,
    version: PROTOCOL_VERSION,
    mode: o.mode,
    hash: "hmac-sha256",
    blockSize: 4096,
    dryRun: o.dryRun,
    clientZstd: false,
    size: o.size,
    key: new Uint8Array(32),
    name: o.name,
  };
}

/** The next message, or null at the end (orderly or not). */
export async function nextMessage(conn: SecureConnection): Promise<Message | null> {
  try {
    const rec = await conn.channel.receive();
    return rec === null ? null : decode(rec);
  } catch {
    return null;
  }
}
