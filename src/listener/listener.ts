/**
 * `ssync listen`: a TCP server that authenticates each client and serves one session.
 *
 * 1. accept: a connection finding its address's token bucket empty (token-buckets.ts) is
 *    closed at once, before any crypto; any other is admitted to the handshake, evicting the
 *    oldest pending handshake of its address prefix or of all when a cap is reached
 *    (handshake-slots.ts). Refusals are logged at a bounded rate (refusal-log.ts).
 * 2. handshake (acceptSecure): the first message within `firstMessageTimeoutMs`, the whole
 *    within `handshakeTimeoutMs`; the client's key must be in authorized_keys (read afresh
 *    per connection), or the client pairs with the active one-time code and its key is
 *    appended there. An unauthorized key gets the encrypted END refusal.
 * 3. admission: beyond the cap of sessions in all or for its key, the session's first
 *    request is answered ERROR EBUSY (refuse-session.ts), still inside its handshake slot.
 *    A session admitted gives its address's token back.
 * 4. session (serveSession) with the open policy of open-for-client.ts, an idle timeout and
 *    the listener's shared memory budget;
 * 5. one log line per session: peer, key fingerprint, mode, path, bytes, time, result (the
 *    first ERROR it sent, when it failed: the real cause, not what followed); with a verbose
 *    log also a line when a key is authenticated and when its session opens a path; while
 *    it runs, a progress line every progressIntervalMs (progress-log.ts).
 * 6. at rest (no connection for IDLE_TRIM_MS), the allocator's free memory goes back to the
 *    kernel (idle-trim.ts): a listener left running holds what it needs, not its peak.
 *
 * Every line goes through one Log (log.ts): levels, text or json, escaped controls.
 *
 * Invariants: nothing a client does can throw out of a connection's handler; every socket
 * has an error listener from the moment it is accepted; each handler runs inside
 * connectionContext, so a failure that escapes anyway names its connection.
 */
import { promises as fs } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname, join } from "node:path";
import type { WorkerPool } from "../engine/worker-pool.ts";
import { formatEndpoint } from "../net/host-port.ts";
import { IdleTimeoutChannel } from "../net/idle-timeout-channel.ts";
import { RateLimitedChannel } from "../net/rate-limited-channel.ts";
import { TokenBucket } from "../net/token-bucket.ts";
import { acceptSecure, type SecureConnection } from "../net/secure-connection.ts";
import type { KeyPair } from "../noise/x25519.ts";
import { messageCode } from "../../protocol/batch-codec.ts";
import { BatchMessageCode } from "../../protocol/constants.ts";
import type { RecordChannel } from "../net/record-channel.ts";
import { type ServerSessionResult, serveSession, type SessionActivity } from "../session/server-session.ts";
import type { CachePolicy } from "../session/cache-session.ts";
import { SessionProgress } from "../session/session-progress.ts";
import {
  type AuthorizedKey,
  type AuthorizedKeysFile,
  findAuthorizedKey,
  readAuthorizedKeys,
  readAuthorizedKeysFile,
} from "../trust/authorized-keys.ts";
import { fingerprint, formatPublicKey } from "../trust/keys.ts";
import type { PairingOffer } from "../trust/pairing-code.ts";
import { ByteWindow } from "../util/byte-window.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { formatBytes } from "../util/format-bytes.ts";
import { addressPrefixes } from "./address-prefixes.ts";
import { type ConnectionContext, connectionContext } from "./connection-context.ts";
import { HandshakeSlots } from "./handshake-slots.ts";
import { IdleTrim } from "./idle-trim.ts";
import { clip, type Log, type LogFields, type LogLevel, PEER_TEXT_CHARS } from "./log.ts";
import {
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_HANDSHAKES,
  DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
  DEFAULT_MAX_HANDSHAKES_PER_NETWORK,
  DEFAULT_MAX_SESSIONS,
  DEFAULT_MAX_SESSIONS_PER_KEY,
  DEFAULT_MEMORY_BUDGET_BYTES,
  FIRST_MESSAGE_TIMEOUT_MS,
  HANDSHAKE_BURST,
  HANDSHAKE_REFILL_PER_SECOND,
  LOCK_WAIT_MS,
  REFUSAL_LINES_PER_SECOND,
} from "./listener-limits.ts";
import { type BatchSlot, PeekedChannel, serveBatch } from "./batch-server.ts";
import { type ClientOpen, exportFolder, openForClient, type OpenPolicy } from "./open-for-client.ts";
import { DEFAULT_PROGRESS_INTERVAL_MS, logProgressEvery } from "./progress-log.ts";
import { RefusalLog } from "./refusal-log.ts";
import { refuseSession } from "./refuse-session.ts";
import { watchSentErrors } from "./sent-errors.ts";
import { TokenBuckets } from "./token-buckets.ts";

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
  /** Where events go (stderr in the CLI); none: nowhere. */
  log?: Log;
  /** authorized_keys as read at start: what the first SIGHUP compares with (default: read it now). */
  authorizedKeys?: readonly AuthorizedKey[];
  /** The whole handshake, acceptance included (default HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
  /** The preamble and handshake message 1 (default FIRST_MESSAGE_TIMEOUT_MS, never above the whole). */
  firstMessageTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Handshakes in progress in all; the oldest is evicted beyond it. */
  maxHandshakes?: number;
  /** Handshakes in progress from one IPv4 address or IPv6 /64; its oldest is evicted beyond it. */
  maxHandshakesPerAddress?: number;
  /** Handshakes in progress from one IPv6 /48. */
  maxHandshakesPerNetwork?: number;
  /** New connections per address prefix: a token bucket of this many... */
  handshakeBurst?: number;
  /** ...refilled at this rate. */
  handshakeRefillPerSecond?: number;
  maxSessions?: number;
  maxSessionsPerKey?: number;
  /** Bytes all sessions together may hold (default DEFAULT_MEMORY_BUDGET_BYTES). */
  memoryBudgetBytes?: number;
  /** Refusal lines per second before they are only counted and summarised. */
  refusalLinesPerSecond?: number;
  /** Block-device exports' journals (default: the state folder, storage/work-files.ts). */
  journalDir?: string;
  /** How long an open waits for a lock held by a session that is ending (default LOCK_WAIT_MS). */
  lockWaitMs?: number;
  /** A progress line per running session this often (default DEFAULT_PROGRESS_INTERVAL_MS; 0: never). */
  progressIntervalMs?: number;
  /** --bwlimit: bytes per second of wire data, each way, all sessions together (default: none). */
  bwlimit?: number;
  /**
   * The signature cache of push destinations (spec §5.10), in the listener's state folder
   * (beside its host key); absent: none is kept (every push reads the destination in full).
   */
  cache?: CachePolicy;
}


/** Who a file session serves. */
interface FileSession {
  entry: AuthorizedKey;
  key: string;
  peer: string;
  paired: boolean;
  /** The client's static key (the signature cache reuses a key with this peer only). */
  remoteStatic: Uint8Array;
  activity: SessionActivity;
  signal: AbortSignal;
}

/** A running session, as shutdown sees it. */
interface RunningSession {
  stop(reason: Error): void;
}

export class Listener implements AsyncDisposable {
  readonly host: string;
  readonly port: number;
  #server: Server;
  #options: ListenerOptions;
  #sockets = new Set<Socket>();
  #slots: HandshakeSlots;
  #buckets: TokenBuckets;
  #refusals: RefusalLog;
  #memory: ByteWindow;
  /** The --bwlimit buckets every session's channel shares, one per direction. */
  #bandwidth: { send: TokenBucket; receive: TokenBucket } | undefined;
  #sessions = new Set<RunningSession>();
  #sessionsOf = new Map<string, number>();
  #active = new Set<Promise<void>>();
  /** Gives the allocator's free memory back once no connection has been handled for a while. */
  #idleTrim = new IdleTrim();
  #stopping = false;
  #connections = 0;
  #handshakes = 0;
  #stopNow: (() => void) | undefined;
  /** authorized_keys warnings already logged (per connection they are logged once). */
  #warned = new Set<string>();
  /** authorized_keys as last read on SIGHUP (or at start), by fingerprint: what the next one reports changed. */
  #keys: Map<string, string>;

  private constructor(server: Server, options: ListenerOptions, keys: readonly AuthorizedKey[]) {
    this.#server = server;
    this.#options = options;
    this.#keys = keyMap(keys);
    const address = server.address() as { address: string; port: number };
    this.host = address.address;
    this.port = address.port;
    const perAddress = options.maxHandshakesPerAddress ?? DEFAULT_MAX_HANDSHAKES_PER_ADDRESS;
    const perNetwork = options.maxHandshakesPerNetwork ?? DEFAULT_MAX_HANDSHAKES_PER_NETWORK;
    this.#slots = new HandshakeSlots({
      total: options.maxHandshakes ?? DEFAULT_MAX_HANDSHAKES,
      capOf: (prefix) => (prefix.endsWith("/48") ? perNetwork : perAddress),
    });
    this.#buckets = new TokenBuckets({
      burst: options.handshakeBurst ?? HANDSHAKE_BURST,
      refillPerSecond: options.handshakeRefillPerSecond ?? HANDSHAKE_REFILL_PER_SECOND,
    });
    this.#refusals = new RefusalLog((line) => this.#log(line, {}, "warn"), {
      perWindow: options.refusalLinesPerSecond ?? REFUSAL_LINES_PER_SECOND,
    });
    this.#memory = new ByteWindow(options.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
    const rate = options.bwlimit;
    this.#bandwidth = rate === undefined
      ? undefined
      : { send: new TokenBucket({ bytesPerSecond: rate }), receive: new TokenBucket({ bytesPerSecond: rate }) };
    server.on("connection", (socket: Socket) => {
      socket.on("error", () => {});
      this.#connections++;
      this.#idleTrim.busy();
      const context: ConnectionContext = { peer: peerOf(socket) };
      const handled = connectionContext.run(context, () => this.#handle(socket, context))
        .catch((e) => this.#log(`${context.peer} internal error: ${(e as Error)?.stack ?? e}`, { peer: context.peer }, "error"));
      this.#active.add(handled);
      void handled.finally(() => {
        this.#active.delete(handled);
        if (this.#active.size === 0 && !this.#stopping) this.#idleTrim.idle();
      });
    });
  }

  /** Binds and starts serving; rejects when the address cannot be bound. */
  static async start(options: ListenerOptions): Promise<Listener> {
    const keys = options.authorizedKeys ?? await readAuthorizedKeys(options.authorizedKeysFile).catch(() => []);
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: options.host, port: options.port, ipv6Only: false }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", () => {}); // accept errors (EMFILE...) must not crash the process
    return new Listener(server, options, keys);
  }

  get address(): string {
    return formatEndpoint({ host: this.host, port: this.port });
  }

  /** Since start: TCP connections accepted, and handshakes completed with an authorized key (tests count them). */
  get counters(): { connections: number; handshakes: number } {
    return { connections: this.#connections, handshakes: this.#handshakes };
  }

  /** Connections in the handshake and in a session, for tests and logs. */
  get load(): { handshakes: number; sessions: number } {
    return { handshakes: this.#slots.size, sessions: this.#sessions.size };
  }

  /** One event (info unless said); the Log escapes client-chosen text: one event, one line. */
  #log(message: string, fields?: LogFields, level: LogLevel = "info"): void {
    this.#options.log?.event(level, message, fields);
  }

  /**
   * Reads authorized_keys now (SIGHUP), logging every warning again, then what changed since
   * the last read: one line per key added, removed or with other options (by fingerprint).
   * Returns the keys' count.
   */
  async rereadAuthorizedKeys(): Promise<number> {
    this.#warned.clear();
    const file = this.#options.authorizedKeysFile;
    const keys = await readAuthorizedKeys(file, { warn: (m) => this.#log(m, { file }, "warn") });
    const now = keyMap(keys);
    const changes: [string, "added" | "removed" | "changed", string][] = [];
    for (const [key, options] of now) {
      if (!this.#keys.has(key)) changes.push([key, "added", options]);
      else if (this.#keys.get(key) !== options) changes.push([key, "changed", options]);
    }
    for (const [key, options] of this.#keys) if (!now.has(key)) changes.push([key, "removed", options]);
    this.#keys = now;
    const count = (what: string) => changes.filter((c) => c[1] === what).length;
    this.#log(
      `re-read ${keys.length} key${keys.length === 1 ? "" : "s"} from ${file}: ` +
        (changes.length === 0 ? "no change" : `${count("added")} added, ${count("removed")} removed, ${count("changed")} changed`),
      { file, keys: keys.length, added: count("added"), removed: count("removed"), changed: count("changed") },
    );
    for (const [key, change, options] of changes) {
      this.#log(`authorized key ${change}: ${key}${options ? ` (${options})` : ""}`, { key, change, file });
    }
    return keys.length;
  }

  /** authorized_keys as it is now; a warning about a line is logged the first time only. */
  #readKeys(): Promise<AuthorizedKeysFile> {
    return readAuthorizedKeysFile(this.#options.authorizedKeysFile, {
      warn: (m) => {
        if (this.#warned.has(m)) return;
        if (this.#warned.size >= 1000) this.#warned.clear();
        this.#warned.add(m);
        this.#log(m, { file: this.#options.authorizedKeysFile }, "warn");
      },
    });
  }

  async #handle(socket: Socket, context: ConnectionContext): Promise<void> {
    const { peer } = context;
    if (this.#stopping) {
      socket.destroy();
      return;
    }
    const prefixes = addressPrefixes(socket.remoteAddress ?? "?");
    const from = prefixes[0];
    const token = this.#buckets.take(prefixes);
    if (!token.taken) {
      this.#refusals.refused(from, `${peer} refused: too many new connections from ${token.empty}`);
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
    const evicted = new AbortController();
    const slot = this.#slots.admit(prefixes, (why) => evicted.abort(new Error(why)));
    try {
      let entry: AuthorizedKey | undefined;
      let conn: SecureConnection;
      const pairing = this.#options.pairing;
      const timeoutMs = this.#options.handshakeTimeoutMs;
      try {
        conn = await acceptSecure(socket, {
          staticKey: this.#options.hostKey,
          psk: pairing?.key,
          timeoutMs,
          firstMessageTimeoutMs: Math.min(this.#options.firstMessageTimeoutMs ?? FIRST_MESSAGE_TIMEOUT_MS, timeoutMs ?? Infinity),
          signal: evicted.signal,
          peerName: peer,
          authorize: async (remoteStatic, info) => {
            const file = await this.#readKeys();
            entry = findAuthorizedKey(file.keys, remoteStatic);
            if (!info.paired) return entry !== undefined;
            if (entry === undefined && file.unusable.some((k) => equalBytes(k, remoteStatic))) {
              // Listed on lines that were skipped: pairing must not hand it a line without
              // the options those lines may hold. The code stays valid for a fixed file.
              this.#log(
                `${peer} pairing refused: key ${fingerprint(remoteStatic)} is listed in ${this.#options.authorizedKeysFile} ` +
                  `on lines that were skipped (see the warnings); fix them, then pair again`,
                { peer, key: fingerprint(remoteStatic), file: this.#options.authorizedKeysFile },
                "warn",
              );
              return false;
            }
            if (!pairing?.consume()) return false;
            // A key listed already keeps its options (read-only, path=) for this session too.
            if (entry === undefined) await this.#addPairedKey(remoteStatic, peer);
            else this.#log(`${peer} paired: key ${fingerprint(remoteStatic)} was listed already, with its options`, { peer, key: fingerprint(remoteStatic) });
            entry ??= { publicKey: remoteStatic, readOnly: false, pathPrefix: null, comment: "" };
            return true;
          },
        });
      } catch (e) {
        const why = ((e as Error).message ?? String(e)).replace(/^Cannot accept a secure connection from \S+: /, "");
        this.#refusals.refused(from, `${peer} refused: ${why}`);
        return;
      }
      this.#handshakes++;
      const key = fingerprint(conn.remoteStatic);
      context.key = key;
      this.#log(`${peer} key ${key}: authenticated${conn.paired ? " (paired)" : ""}`, { peer, key, paired: conn.paired }, "debug");
      const busy = this.#sessionRefusal(key);
      if (busy !== undefined) {
        this.#refusals.refused(key, `${peer} key ${key} refused: ${busy}`);
        await refuseSession(conn.channel, { message: busy, timeoutMs: FIRST_MESSAGE_TIMEOUT_MS, signal: evicted.signal });
        await conn[Symbol.asyncDispose]().catch(() => {});
        return;
      }
      slot.release();
      this.#buckets.refund(prefixes);
      await this.#serve(conn, { entry: entry!, key, context });
    } finally {
      slot.release();
    }
  }

  /** Why a new session of this key is not served now, or undefined when it is. */
  #sessionRefusal(key: string): string | undefined {
    const max = this.#options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    const maxPerKey = this.#options.maxSessionsPerKey ?? DEFAULT_MAX_SESSIONS_PER_KEY;
    if (this.#stopping) return "Cannot start a session: the listener is stopping";
    if (this.#sessions.size >= max) {
      return `Cannot start a session: the listener already serves ${this.#sessions.size}, its limit; try again later`;
    }
    const ofKey = this.#sessionsOf.get(key) ?? 0;
    if (ofKey >= maxPerKey) {
      return `Cannot start a session: the listener already serves ${ofKey} for this key, its limit per key; try again later`;
    }
    return undefined;
  }

  async #serve(conn: SecureConnection, o: { entry: AuthorizedKey; key: string; context: ConnectionContext }): Promise<void> {
    const { entry, key, context } = o;
    const peer = context.peer;
    const socket = conn.channel.socket;
    const idle = new IdleTimeoutChannel(conn.channel, {
      timeoutMs: this.#options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      // Bytes the kernel took from us: a slow reader still counts as progress.
      sendProgress: () => socket.bytesWritten - socket.writableLength,
    });
    const limited = this.#bandwidth === undefined ? idle : new RateLimitedChannel(idle, { ...this.#bandwidth, activity: idle.activity });
    // The session ends now once the client is gone or the listener stops it (serveSession).
    const ended = new AbortController();
    const gone = () => ended.abort(new Error("the client closed the connection"));
    if (socket.destroyed) gone();
    else socket.once("close", gone);
    const running: RunningSession = {
      stop: (reason) => {
        ended.abort(reason);
        limited.close(reason);
      },
    };
    // A batch is one session, whatever its slots carry (admission, §6).
    this.#sessions.add(running);
    this.#sessionsOf.set(key, (this.#sessionsOf.get(key) ?? 0) + 1);
    try {
      // The first record says what the connection is: BATCH, or a v1 session's OPEN.
      const peeked = new PeekedChannel(limited);
      const first = await peeked.first.catch(() => null);
      const session: FileSession = { entry, key, peer, paired: conn.paired, remoteStatic: conn.remoteStatic, activity: idle.activity, signal: ended.signal };
      if (first !== null && messageCode(first) === BatchMessageCode.BATCH) {
        await serveBatch(peeked, {
          first,
          signal: ended.signal,
          activity: idle.activity,
          policy: this.#policyOf(entry, { peer, key }),
          removed: (name) => this.#options.cache?.cache.drop(this.#cachePath(name)),
          serveFile: (channel, batch) => this.#serveFile(channel, { ...session, batch }),
          log: (message, fields, level) => this.#log(`${peer} key ${key}${conn.paired ? " (paired)" : ""} ${message}`, { peer, key, ...fields }, level),
          wire: () => ({ bytesReceived: socket.bytesRead, bytesSent: socket.bytesWritten }),
        });
      } else {
        await this.#serveFile(peeked, { ...session, context });
      }
    } finally {
      socket.off("close", gone);
      this.#sessions.delete(running);
      const left = this.#sessionsOf.get(key)! - 1;
      if (left === 0) this.#sessionsOf.delete(key);
      else this.#sessionsOf.set(key, left);
      await conn[Symbol.asyncDispose]().catch(() => {});
    }
  }

  /**
   * A file's signature cache key (spec §5.10): the path as open-for-client.ts resolves the
   * client's name: an export's path, PATH under an exported folder for NAME/PATH, else under
   * the root.
   */
  #cachePath(name: string): string {
    const exports = this.#options.exports ?? new Map<string, string>();
    const folder = exportFolder(name, { exports });
    if (folder !== undefined && folder.rest !== "") return join(folder.base, folder.rest);
    return exports.get(name) ?? join(this.#options.root, name);
  }

  /** What this key may reach (open-for-client.ts, tree-access.ts). */
  #policyOf(entry: AuthorizedKey, o: { peer: string; key: string; name?: string }): OpenPolicy {
    return {
      root: this.#options.root,
      exports: this.#options.exports ?? new Map(),
      listenerReadOnly: this.#options.readOnly === true,
      keyReadOnly: entry.readOnly,
      pathPrefix: entry.pathPrefix,
      journalDir: this.#options.journalDir,
      lockWaitMs: this.#options.lockWaitMs ?? LOCK_WAIT_MS,
      log: (message) => this.#log(`${o.peer} key ${o.key}: ${clipName(message, o.name)}`, { peer: o.peer, key: o.key, file: o.name && clip(o.name) }),
    };
  }

  /**
   * One file session, a v1 connection's or a batch slot's: serveSession with the open policy
   * (a batch's: its own memory bounds, one mode for all its files), a progress line while it
   * runs, and its log line at the end.
   */
  async #serveFile(
    channel: RecordChannel,
    o: FileSession & { context?: ConnectionContext; batch?: BatchSlot },
  ): Promise<ServerSessionResult> {
    const { entry, key, peer, batch } = o;
    const sent = watchSentErrors(channel);
    let request: ClientOpen | undefined;
    let described = "no request";
    const started = Date.now();
    const progress = new SessionProgress();
    const stopProgress = logProgressEvery(progress, {
      intervalMs: this.#options.progressIntervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS,
      describe: () => `${peer} key ${key} ${described}`,
      log: (line) => this.#log(line),
    });
    try {
      const result = await serveSession(sent.channel, {
        pool: this.#options.pool,
        activity: o.activity,
        signal: o.signal,
        memory: this.#memory,
        ...(batch ? { bufferBytes: batch.bufferBytes, batchMemory: batch.memory } : {}),
        progress,
        exported: (name) => this.#options.exports?.has(name) === true,
        ...(this.#options.cache
          ? {
            cache: {
              policy: this.#options.cache,
              path: (name: string) => this.#cachePath(name),
              peer: o.remoteStatic,
              warn: (message: string) => this.#log(`${peer} key ${key}: ${message}`, { peer, key }, "warn"),
            },
          }
          : {}),
        open: async (req) => {
          request = req;
          described = `${batch ? `batch slot ${batch.slot} ` : ""}${req.mode}${req.dryRun ? " (dry run)" : ""} ${JSON.stringify(clip(req.name))}`;
          if (o.context) o.context.request = described;
          this.#log(`${peer} key ${key}: open ${described}${req.inplace ? " in place" : ""}`, { peer, key, mode: req.mode, file: clip(req.name), dryRun: req.dryRun }, "debug");
          await batch?.enterMode(req.mode, o.signal);
          return await openForClient(req, this.#policyOf(entry, { peer, key, name: req.name }));
        },
      });
      const s = result.stats;
      const firstError = sent.first();
      let outcome: string;
      if (result.committed) outcome = "ok";
      else if (firstError !== undefined) {
        outcome = `failed: ${firstError.code} ${clipName(firstError.message, request?.name)}`;
        if (result.error && result.error.message !== firstError.message) outcome += `; then ${clipName(result.error.message, request?.name)}`;
      } else outcome = result.error ? `failed: ${clipName(result.error.message, request?.name)}` : "ended before commit";
      const seconds = Math.round((Date.now() - started) / 100) / 10;
      this.#log(
        `${peer} key ${key}${o.paired ? " (paired)" : ""} ${described}: read ${formatBytes(s.bytesRead)}, ` +
          `${s.bytesFromCache > 0 ? `digests of ${formatBytes(s.bytesFromCache)} from the signature cache, ` : ""}wrote ${formatBytes(s.bytesWritten)}, ` +
          `holes ${formatBytes(s.bytesPunched)}, wire in ${formatBytes(result.wire.bytesReceived)} out ${formatBytes(result.wire.bytesSent)}, ` +
          `${seconds} s: ${outcome}`,
        {
          peer,
          key,
          paired: o.paired,
          ...(batch ? { slot: batch.slot } : {}),
          mode: request?.mode,
          file: request && clip(request.name),
          dryRun: request?.dryRun,
          bytesRead: s.bytesRead,
          bytesFromCache: s.bytesFromCache,
          bytesWritten: s.bytesWritten,
          holeBytesPunched: s.bytesPunched,
          wireBytesIn: result.wire.bytesReceived,
          wireBytesOut: result.wire.bytesSent,
          seconds,
          ok: result.committed,
          error: result.committed ? undefined : firstError?.code,
          outcome,
        },
        result.committed ? "info" : "warn",
      );
      return result;
    } finally {
      stopProgress();
    }
  }

  /** Appends a newly paired key, without options, to authorized_keys. */
  async #addPairedKey(publicKey: Uint8Array, peer: string): Promise<void> {
    const file = this.#options.authorizedKeysFile;
    await fs.mkdir(dirname(file), { recursive: true, mode: 0o700 });
    const text = await fs.readFile(file, "utf8").catch(() => "");
    const separator = text.length > 0 && !text.endsWith("\n") ? "\n" : "";
    const comment = `paired ${new Date().toISOString().slice(0, 10)} from ${peer}`;
    await fs.appendFile(file, separator + formatPublicKey(publicKey, { comment }) + "\n", { mode: 0o600 });
    // Logged here, not again by the next SIGHUP.
    this.#keys.set(fingerprint(publicKey), keyOptions({ publicKey, readOnly: false, pathPrefix: null, comment }));
    this.#log(`${peer} paired: key ${fingerprint(publicKey)} added to ${file}`, { peer, key: fingerprint(publicKey), file });
  }

  /**
   * Stops accepting and ends every pending handshake at once; running sessions may finish
   * within `graceMs` (or until stopNow()), then they are cut (their destinations stay
   * rerunnable: an interrupted session leaves the old image or a state a rerun completes).
   * Resolves once every handler is done, with how many sessions were running and cut.
   */
  async shutdown(options: { graceMs: number }): Promise<{ sessions: number; cut: number }> {
    this.#stopping = true;
    this.#idleTrim[Symbol.dispose]();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#slots.evictAll("the listener is stopping");
    const sessions = this.#sessions.size;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => {
      this.#stopNow = resolve;
      timer = setTimeout(resolve, options.graceMs);
    });
    await Promise.race([this.#drained(), grace]);
    clearTimeout(timer);
    this.#stopNow = undefined;
    const cut = this.#sessions.size;
    const reason = new Error(`the listener is stopping: the session was cut after ${options.graceMs / 1000} s`);
    for (const s of this.#sessions) s.stop(reason);
    await this.#drained();
    for (const s of this.#sockets) s.destroy();
    await closed;
    this.#refusals.flush();
    return { sessions, cut };
  }

  /** Cuts the sessions shutdown() is still waiting for (a second signal). */
  stopNow(): void {
    this.#stopNow?.();
  }

  /** Resolves once no connection handler runs (none start once stopping). */
  async #drained(): Promise<void> {
    while (this.#active.size > 0) await Promise.allSettled([...this.#active]);
  }

  /** Stops accepting, drops every connection and waits for their handlers. */
  async close(): Promise<void> {
    await this.shutdown({ graceMs: 0 });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Fingerprint → what SIGHUP compares: the key's options and comment ("" when none); the first line of a key counts. */
function keyMap(keys: readonly AuthorizedKey[]): Map<string, string> {
  const map = new Map<string, string>();
  for (const k of keys) {
    const key = fingerprint(k.publicKey);
    if (!map.has(key)) map.set(key, keyOptions(k));
  }
  return map;
}

function keyOptions(k: AuthorizedKey): string {
  const options = [k.readOnly ? "read-only" : "", k.pathPrefix !== null ? `path=${k.pathPrefix}` : ""].filter((o) => o !== "");
  return [...options, k.comment ? JSON.stringify(k.comment) : ""].filter((o) => o !== "").join(", ");
}

function peerOf(socket: Socket): string {
  const host = socket.remoteAddress ?? "?";
  return formatEndpoint({ host: host.replace(/^::ffff:/, ""), port: socket.remotePort ?? 0 });
}

/**
 * A message about the client's file as the log shows it: the name (chosen by the client, up to
 * 4096 bytes) clipped wherever it appears, the whole clipped to a few names' length.
 */
function clipName(message: string, name: string | undefined): string {
  const short = name === undefined ? name : clip(name);
  const text = short === undefined || short === name ? message : message.split(name!).join(short);
  return clip(text, 3 * PEER_TEXT_CHARS);
}
