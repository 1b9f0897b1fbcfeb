/**
 * The client's way in: TCP connect, Noise handshake, host-key policy, then a channel.
 *
 * Host-key policy, decided after handshake message 2 (before our key is revealed):
 * - a key pinned for this host:port in known_hosts: must match; a different key is refused
 *   always, saying the host key CHANGED;
 * - --host-key FP: the key's fingerprint must be FP (then it is pinned);
 * - unknown: refused with its fingerprint, unless --accept-new or pairing (then pinned).
 * A new pin is written only after the listener accepted us (its acceptance record is the
 * first proof that it holds the key, and with pairing, the code).
 *
 * After message 3 the listener either accepts (an empty record) or refuses our key with an
 * encrypted END (connectSecure throws a HandshakeRefusedError): only that refusal is "not
 * authorized" (AuthenticationError, exit 5). An EOF, a reset or a bad record there is the
 * listener closing during the handshake (a plain Error, exit 1): a listener killed at that
 * moment must not look like a refusal. With pairing, a wrong code cannot be refused with an
 * encrypted record (the keys differ), so a close after message 3 still means the code.
 *
 * The socket has TCP keepalive from the start, so a peer that vanished without a word is
 * noticed by the kernel even while the session waits on us.
 */
import { connect, type Socket } from "node:net";
import { AuthenticationError, ErrnoError } from "../util/errors.ts";
import { formatEndpoint } from "./host-port.ts";
import { fingerprint } from "../trust/keys.ts";
import { addKnownHost, lookupKnownHost } from "../trust/known-hosts.ts";
import { pairingKey } from "../trust/pairing-code.ts";
import { HANDSHAKE_TIMEOUT_MS } from "../../protocol/constants.ts";
import { connectSecure, HandshakeRefusedError, type SecureConnection } from "./secure-connection.ts";
import type { KeyPair } from "../noise/x25519.ts";

/** Idle time before the kernel's first keepalive probe. */
const KEEPALIVE_DELAY_MS = 30_000;

export interface DialOptions {
  host: string;
  port: number;
  staticKey: KeyPair;
  knownHostsFile: string;
  acceptNew?: boolean;
  /** Expected fingerprint ("SHA256:..." or just the base64 part). */
  hostKey?: string;
  /** One-time pairing code from `ssync listen --pair`. */
  pairCode?: string;
  timeoutMs?: number;
  /** The local address to connect from (a multi-homed host, like ssh -b); default: the OS's choice. */
  localAddress?: string;
  /** Told about known_hosts lines that were skipped (file and line named). */
  warn?: (message: string) => void;
}

function connectTcp(host: string, port: number, o: { timeoutMs: number; localAddress?: string }): Promise<Socket> {
  const { timeoutMs } = o;
  const name = formatEndpoint({ host, port });
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, localAddress: o.localAddress });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`Cannot connect to ${name}: no answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
      resolve(socket);
    });
    const onError = (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = e.code === "ECONNREFUSED"
        ? "connection refused (is ssync listen running there?)"
        : e.code === "ENOTFOUND" || e.code === "EAI_AGAIN"
        ? "unknown host"
        : e.message;
      reject(new ErrnoError(e.code ?? "EIO", `Cannot connect to ${name}: ${why}`, { cause: e }));
    };
    socket.once("error", onError);
  });
}

function sameFingerprint(given: string, actual: string): boolean {
  const strip = (s: string) => s.trim().replace(/^SHA256:/i, "").replace(/=+$/, "");
  return strip(given) === strip(actual);
}

export async function dial(options: DialOptions): Promise<SecureConnection> {
  const name = formatEndpoint(options);
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const psk = options.pairCode !== undefined ? pairingKey(options.pairCode) : undefined;
  const socket = await connectTcp(options.host, options.port, { timeoutMs, localAddress: options.localAddress });
  let refusal: Error | undefined;
  let pin = false;
  let hostVerified = false;
  let conn: SecureConnection;
  try {
    conn = await connectSecure(socket, {
      staticKey: options.staticKey,
      psk,
      timeoutMs,
      peerName: name,
      verifyHost: async (remote) => {
        const fp = fingerprint(remote);
        const known = await lookupKnownHost(options.knownHostsFile, {
          host: options.host,
          port: options.port,
          publicKey: remote,
          warn: options.warn,
        });
        if (known.status === "changed") {
          const pinned = known.knownKeys.length > 0
            ? `not the key pinned in ${options.knownHostsFile}`
            : `and ${options.knownHostsFile} line ${known.unreadableLines?.join(", ")} (unreadable) may pin another key`;
          refusal = new AuthenticationError(
            `The host key of ${name} has CHANGED: it is now ${fp}, ${pinned}. ` +
              `This may be an attack (someone in the middle), or the listener's key was replaced; ` +
              `if you are sure it was replaced, run ssync known-hosts remove ${name} (it edits ${options.knownHostsFile})`,
          );
          return false;
        }
        if (options.hostKey !== undefined && !sameFingerprint(options.hostKey, fp)) {
          refusal = new AuthenticationError(`The host key of ${name} is ${fp}, not ${options.hostKey} as given by --host-key`);
          return false;
        }
        if (known.status === "unknown") {
          if (options.hostKey === undefined && !options.acceptNew && psk === undefined) {
            refusal = new AuthenticationError(
              `The host key of ${name} is unknown: its fingerprint is ${fp}. If that is the fingerprint ` +
                `ssync listen printed there, rerun with --host-key ${fp} (or --accept-new)`,
            );
            return false;
          }
          pin = true;
        }
        hostVerified = true;
        return true;
      },
    });
  } catch (e) {
    throw refusal ?? handshakeError(e, { name, paired: psk !== undefined, hostVerified, ourKey: options.staticKey.publicKey });
  }
  if (pin) {
    try {
      await addKnownHost(options.knownHostsFile, {
        host: options.host,
        port: options.port,
        publicKey: conn.remoteStatic,
        comment: `added ${new Date().toISOString().slice(0, 10)}${psk ? " by pairing" : ""}`,
      });
    } catch (e) {
      await conn[Symbol.asyncDispose]().catch(() => {});
      throw e;
    }
  }
  return conn;
}

/**
 * What a failed handshake means to the user, once our own host-key checks passed or were
 * not reached: a refusal, a pairing problem, a close during the handshake, or as it is.
 */
function handshakeError(e: unknown, o: { name: string; paired: boolean; hostVerified: boolean; ourKey: Uint8Array }): unknown {
  const { name } = o;
  const message = (e as Error)?.message ?? String(e);
  const timedOut = /timed out/.test(message);
  if (o.paired) {
    if (!o.hostVerified && /peer closed the connection/.test(message)) {
      // A listener with no active code closes right after our first message.
      return new AuthenticationError(
        `Cannot pair with ${name}: the listener is not accepting pairing now (the code was already used or has expired, or it was started without --pair)`,
        { cause: e },
      );
    }
    if (o.hostVerified && !timedOut) {
      // Refused with END (the code was used up meanwhile), or closed: with a wrong code the keys differ.
      return new AuthenticationError(
        `Cannot pair with ${name}: the listener refused the pairing code (wrong, already used, or expired; ssync listen --pair prints a new one)`,
        { cause: e },
      );
    }
    if (o.hostVerified) {
      return new AuthenticationError(`Cannot pair with ${name}: ${message} (wrong, used or expired pairing code?)`, { cause: e });
    }
    return e;
  }
  if (e instanceof HandshakeRefusedError) {
    return new AuthenticationError(
      `Cannot log in to ${name}: the listener does not authorize our key ${fingerprint(o.ourKey)}; ` +
        `add our public key to its authorized_keys, or pair with --pair CODE`,
      { cause: e },
    );
  }
  if (o.hostVerified && !timedOut) {
    return new Error(`Cannot connect to ${name}: the listener closed the connection during the handshake`, { cause: e });
  }
  return e;
}
