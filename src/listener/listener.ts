/**
 * `ssync listen`: a TCP server that authenticates each client and serves one session.
 *
 * 1. accept: a connection beyond the handshake cap (in all, or from one address: an IPv4
 *    address or an IPv6 /64), or beyond the session cap, is closed at once without reading
 *    anything;
 * 2. handshake (acceptSecure) under a time limit; the client's key must be in
 *    authorized_keys (read afresh per connection), or the client pairs with the active
 *    one-time code and its key is appended there;
 * 3. session (serveSession) with the open policy of listener-paths.ts and an idle timeout;
 * 4. one log line per connection: peer, key fingerprint, mode, path, bytes, result.
 *
 * Invariant: nothing a client does can throw out of a connection's handler; every socket
 * has an error listener from the moment it is accepted.
 */
import { promises as fs } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import type { WorkerPool } from "../engine/worker-pool.ts";
import { serveSession } from "../session/server-session.ts";
import { type AuthorizedKey, findAuthorizedKey, readAuthorizedKeys } from "../trust/authorized-keys.ts";
import { formatEndpoint } from "../net/host-port.ts";
import { IdleTimeoutChannel } from "../net/idle-timeout-channel.ts";
import { fingerprint, formatPublicKey } from "../trust/keys.ts";
import { type ClientOpen, openForClient } from "./open-for-client.ts";
import type { PairingOffer } from "../trust/pairing-code.ts";
import { acceptSecure, type SecureConnection } from "../net/secure-connection.ts";
import type { KeyPair } from "../noise/x25519.ts";
import { dirname } from "node:path";

export interface ListenerOptions {
  host: string;
  port: number;
  /** Resolved root folder. */
  root: string;
  exports?: ReadonlyMap<string, string>;
  readOnly?: boolean;
  hostKey: KeyPair;
  authorizedKeysFile: string;
  pairing?: PairingOffer;
  pool: WorkerPool;
  /** One line per event (stderr in the CLI). */
  log?: (line: string) => void;
  handshakeTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxHandshakes?: number;
  /** Handshakes at once from one address (IPv4) or /64 (IPv6). */
  maxHandshakesPerAddress?: number;
  maxSessions?: number;
}

export const DEFAULT_MAX_HANDSHAKES = 16;
export const DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 4;
export const DEFAULT_MAX_SESSIONS = 64;
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

export class Listener implements AsyncDisposable {
  readonly host: string;
  readonly port: number;
  #server: Server;
  #options: ListenerOptions;
  #sockets = new Set<Socket>();
  #handshakes = 0;
  /** Handshakes in progress per addressKey(); entries are removed when they reach 0. */
  #handshakesFrom = new Map<string, number>();
  #sessions = 0;
  #active = new Set<Promise<void>>();

  private constructor(server: Server, options: ListenerOptions) {
    this.#server = server;
    this.#options = options;
    const address = server.address() as { address: string; port: number };
    this.host = address.address;
    this.port = address.port;
    server.on("connection", (socket: Socket) => {
      const handled = this.#handle(socket).catch((e) => this.#log(`${peerOf(socket)} internal error: ${(e as Error)?.message}`));
      this.#active.add(handled);
      handled.finally(() => this.#active.delete(handled));
    });
  }

  /** Binds and starts serving; rejects when the address cannot be bound. */
  static async start(options: ListenerOptions): Promise<Listener> {
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: options.host, port: options.port, ipv6Only: false }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", () => {}); // accept errors (EMFILE...) must not crash the process
    return new Listener(server, options);
  }

  get address(): string {
    return formatEndpoint({ host: this.host, port: this.port });
  }

  /** Connections in the handshake and in a session, for tests and logs. */
  get load(): { handshakes: number; sessions: number } {
    return { handshakes: this.#handshakes, sessions: this.#sessions };
  }

  /** Client-chosen text (names, error messages naming them) is escaped: one event, one line. */
  #log(line: string): void {
    this.#options.log?.(`${new Date().toISOString()} ${escapeControls(line)}`);
  }

  async #handle(socket: Socket): Promise<void> {
    socket.on("error", () => {});
    const peer = peerOf(socket);
    const maxHandshakes = this.#options.maxHandshakes ?? DEFAULT_MAX_HANDSHAKES;
    const maxSessions = this.#options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    const from = addressKey(socket.remoteAddress ?? "?");
    const maxFrom = this.#options.maxHandshakesPerAddress ?? DEFAULT_MAX_HANDSHAKES_PER_ADDRESS;
    if (this.#handshakes >= maxHandshakes || this.#handshakes + this.#sessions >= maxSessions) {
      this.#log(`${peer} refused: too many connections`);
      socket.destroy();
      return;
    }
    if ((this.#handshakesFrom.get(from) ?? 0) >= maxFrom) {
      this.#log(`${peer} refused: too many connections in the handshake from ${from}`);
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));

    let entry: AuthorizedKey | undefined;
    let conn: SecureConnection;
    this.#handshakes++;
    this.#handshakesFrom.set(from, (this.#handshakesFrom.get(from) ?? 0) + 1);
    try {
      const pairing = this.#options.pairing;
      conn = await acceptSecure(socket, {
        staticKey: this.#options.hostKey,
        psk: pairing?.key,
        timeoutMs: this.#options.handshakeTimeoutMs,
        peerName: peer,
        authorize: async (remoteStatic, info) => {
          if (info.paired) {
            if (!pairing?.consume()) return false;
            await this.#addPairedKey(remoteStatic, peer);
            // A key listed already keeps its options (read-only, path=) for this session too.
            entry = findAuthorizedKey(await readAuthorizedKeys(this.#options.authorizedKeysFile), remoteStatic) ??
              { publicKey: remoteStatic, readOnly: false, pathPrefix: null, comment: "" };
            return true;
          }
          entry = findAuthorizedKey(await readAuthorizedKeys(this.#options.authorizedKeysFile), remoteStatic);
          return entry !== undefined;
        },
      });
    } catch (e) {
      this.#log(`${peer} refused: ${((e as Error).message ?? String(e)).replace(/^Cannot accept a secure connection from \S+: /, "")}`);
      return;
    } finally {
      this.#handshakes--;
      const left = this.#handshakesFrom.get(from)! - 1;
      if (left === 0) this.#handshakesFrom.delete(from);
      else this.#handshakesFrom.set(from, left);
    }

    this.#sessions++;
    const key = fingerprint(conn.remoteStatic);
    let request: ClientOpen | undefined;
    try {
      const socket = conn.channel.socket;
      const channel = new IdleTimeoutChannel(conn.channel, {
        timeoutMs: this.#options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
        // Bytes the kernel took from us: a slow reader still counts as progress.
        sendProgress: () => socket.bytesWritten - socket.writableLength,
      });
      const result = await serveSession(channel, {
        pool: this.#options.pool,
        activity: channel.activity,
        open: (req) => {
          request = req;
          return openForClient(req, {
            root: this.#options.root,
            exports: this.#options.exports ?? new Map(),
            listenerReadOnly: this.#options.readOnly === true,
            keyReadOnly: entry!.readOnly,
            pathPrefix: entry!.pathPrefix,
          });
        },
      });
      const s = result.stats;
      const what = request ? `${request.mode}${request.dryRun ? " (dry run)" : ""} ${JSON.stringify(request.name)}` : "no request";
      const outcome = result.committed ? "ok" : result.error ? `failed: ${result.error.message}` : "ended before commit";
      this.#log(
        `${peer} key ${key}${conn.paired ? " (paired)" : ""} ${what}: read ${s.bytesRead} B, wrote ${s.bytesWritten} B, ` +
          `holes ${s.bytesPunched} B, wire in ${result.wire.bytesReceived} B out ${result.wire.bytesSent} B: ${outcome}`,
      );
    } finally {
      this.#sessions--;
      await conn[Symbol.asyncDispose]().catch(() => {});
    }
  }

  async #addPairedKey(publicKey: Uint8Array, peer: string): Promise<void> {
    const file = this.#options.authorizedKeysFile;
    const existing = await readAuthorizedKeys(file);
    if (findAuthorizedKey(existing, publicKey) === undefined) {
      await fs.mkdir(dirname(file), { recursive: true, mode: 0o700 });
      const text = await fs.readFile(file, "utf8").catch(() => "");
      const separator = text.length > 0 && !text.endsWith("\n") ? "\n" : "";
      const comment = `paired ${new Date().toISOString().slice(0, 10)} from ${peer}`;
      await fs.appendFile(file, separator + formatPublicKey(publicKey, { comment }) + "\n", { mode: 0o600 });
    }
    this.#log(`${peer} paired: key ${fingerprint(publicKey)} added to ${file}`);
  }

  /** Stops accepting, drops every connection and waits for their handlers. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#sockets) s.destroy();
    await closed;
    await Promise.allSettled([...this.#active]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Control, line-separator and bidi-override characters as \uXXXX, so a log line cannot be forged. */
function escapeControls(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function peerOf(socket: Socket): string {
  const host = socket.remoteAddress ?? "?";
  return formatEndpoint({ host: host.replace(/^::ffff:/, ""), port: socket.remotePort ?? 0 });
}

/**
 * What one client counts as for the per-address handshake cap: an IPv4 address (also when
 * mapped into IPv6), or the /64 prefix of an IPv6 address, since one host may hold a whole /64.
 */
export function addressKey(address: string): string {
  const v4 = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
  if (!v4.includes(":")) return v4;
  const [head, tail = ""] = v4.toLowerCase().split("%")[0].split("::");
  const left = head === "" ? [] : head.split(":");
  const right = v4.includes("::") ? (tail === "" ? [] : tail.split(":")) : [];
  const groups = [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":") + "::/64";
}
