/**
 * What `ssync push` and `ssync pull` share:
 * 1. load our key, open the local file (push: source; pull: destination, created when
 *    missing);
 * 2. dial the listener (host-key policy, optional pairing), run the client session under
 *    the idle timeout (the listener's, DEFAULT_IDLE_TIMEOUT_MS, or --idle-timeout) and
 *    --bwlimit (one token bucket per direction for the whole command, verify included); a
 *    listener that answers busy is tried again for --wait seconds (wait-while-busy.ts);
 * 3. --verify: a second session, dry run, fresh hash key: it must find nothing to send;
 * 4. print the summary.
 *
 * `signal` (Ctrl-C, cli/interrupt.ts) aborts whatever is under way: the dial, a pause between
 * tries, the session (through its one abort path); the store is disposed as on any failure.
 *
 * A pull's local destination is journaled like any destination (storage/open-destination.ts):
 * a pull that fails before its commit leaves the old file, or a partial file to resume from.
 */
import fs from "node:fs";
import process from "node:process";
import nodePath, { join } from "node:path";
import { SignatureCache } from "../storage/signature-cache.ts";
import { CACHE_MAX_AGE_HELP, clientCacheDir, parseCacheMaxAge } from "./cache-options.ts";
import { DEFAULT_IDLE_TIMEOUT_MS } from "../listener/listener-limits.ts";
import { WorkerPool } from "../engine/worker-pool.ts";
import { networkPool } from "./network-pool.ts";
import { configDir } from "../trust/config-dir.ts";
import { type ClientChannelOptions, openClientChannel } from "../net/client-channel.ts";
import { DEFAULT_PORT, type Endpoint, formatEndpoint, looksLikeRemote, parseEndpoint } from "../net/host-port.ts";
import { TokenBucket } from "../net/token-bucket.ts";
import { fingerprint, readPrivateKey } from "../trust/keys.ts";
import { normalizePairingCode } from "../trust/pairing-code.ts";
import type { KeyPair } from "../noise/x25519.ts";
import { runClient, type SyncReport } from "../session/client-session.ts";
import type { SharedSource } from "../session/fan-out-source.ts";
import { SessionProgress } from "../session/session-progress.ts";
import { openDestination } from "../storage/open-destination.ts";
import { openSource } from "../storage/open-source.ts";
import type { Storage } from "../storage/storage.ts";
import { abortable } from "../util/abortable.ts";
import { MismatchError, UsageError } from "../util/errors.ts";
import { formatBytes } from "../util/format-bytes.ts";
import { parseBwlimit } from "./bwlimit.ts";
import { describeSettings, type EngineFlags, engineOptions, type EngineOptions, ownerIfRoot, parseIdleTimeout, withEngineOptions } from "./engine-options.ts";
import { configuredFlags, loadConfig, resolveHost } from "./config-file.ts";
import { DEFAULT_CLIENT_KEY } from "./keygen-command.ts";
import { progressFormat } from "./progress-mode.ts";
import { showProgress } from "./show-progress.ts";
import { summarize } from "./summary.ts";
import { printSummary } from "./sync-command.ts";
import { busyAfterWait, isBusy, retryWhileBusy } from "./wait-while-busy.ts";

export interface RemoteFlags extends EngineFlags {
  key?: string;
  acceptNew?: boolean;
  hostKey?: string;
  pair?: string;
  knownHosts?: string;
  idleTimeout?: string | number;
  bwlimit?: string | number;
  /** cac's `--no-cache` sets it false. */
  cache?: boolean;
  cacheMaxAge?: string | number;
}

// deno-lint-ignore no-explicit-any
export function withRemoteOptions<T extends { option: (...a: any[]) => T }>(cmd: T): T {
  return withEngineOptions(cmd
    .option("--key <file>", `Our private key (default: <config>/${DEFAULT_CLIENT_KEY}; make one with ssync keygen; or the alias's key)`)
    .option("--accept-new", "Trust and pin the listener's host key on first contact")
    .option("--host-key <fingerprint>", "Trust the listener only if its host key has this fingerprint (then pin it; or the alias's host-key)")
    .option("--pair <code>", "First contact: the one-time code printed by ssync listen --pair")
    .option("--known-hosts <file>", "Pinned host keys (default: <config>/known_hosts)")
    .option(
      "--idle-timeout <seconds>",
      `Give up when the listener owes us a reply and sends nothing for this many seconds (default ${DEFAULT_IDLE_TIMEOUT_MS / 1000}, the listener's own)`,
    )
    .option(
      "--bwlimit <rate>",
      "Limit the data on the wire to RATE bytes per second each way, such as 50M (K, M, G: 1024-based; at least 64K; 0: no limit)",
    )
    .option("--no-cache", "Do not use the destination's signature cache (push: the listener reads its file in full; pull: ours is read, none kept)")
    .option("--cache-max-age <age>", `pull: ${CACHE_MAX_AGE_HELP} (a push's listener has its own)`));
}

/** A remote as the command line gave it: `port` undefined when it named none. */
export interface RemoteTarget {
  host: string;
  port: number | undefined;
  path: string | undefined;
}

/** What push's and pull's --help say about REMOTE (host-port.ts has the grammar). */
export const REMOTE_HELP = [
  `REMOTE is HOST[:PORT][:PATH] (default port ${DEFAULT_PORT}): HOST:PORT, HOST:PORT:PATH, HOST:PATH.`,
  "  A mistyped port (HOST:7O71) is refused, never taken for a file name;",
  "  HOST::PATH names any path at the default port (a file named 7070: HOST::7070).",
  "  PATH is relative to the listener's root, or the name of an export.",
  "  IPv6: [fd00::2]:7070:vm.img. A local file whose name has a colon: ./NAME.",
].join("\n  ");

/** HOST[:PORT][:PATH] from the command line; a malformed one is a usage error. */
export function parseRemote(text: string): RemoteTarget {
  try {
    const e = parseEndpoint(text);
    return { host: e.host, port: e.explicitPort ? e.port : undefined, path: e.path };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * The LOCAL argument of push or pull, refused when it reads as a remote (the arguments in
 * the other verb's order): `other` is the verb that takes it first or second.
 */
export function checkLocal(local: string, o: { other: "push" | "pull"; remote: string }): void {
  if (!looksLikeRemote(local)) return;
  const order = o.other === "pull" ? `ssync pull ${local} ${o.remote}` : `ssync push ${o.remote} ${local}`;
  throw new UsageError(
    `Invalid local file "${local}": it reads as a remote (HOST:…); to sync the other way use ${order}; a local file with a colon in its name: ./${local}`,
  );
}

async function clientKey(file: string | undefined): Promise<KeyPair> {
  const path = file ?? join(configDir(), DEFAULT_CLIENT_KEY);
  if (file === undefined && !fs.existsSync(path)) throw new UsageError(`No key: run ssync keygen (looked for ${path})`);
  return await readPrivateKey(path);
}

/** What push and pull, of a file or a folder, make of the command line before they dial. */
export interface RemoteContext {
  remote: Endpoint & { path: string };
  /** The listener as messages name it ("backup:7070"). */
  peer: string;
  flags: RemoteFlags;
  o: EngineOptions;
  /** The attributes wanted and the notes about them (--owner only as root, on a pull). */
  owner: { wanted: EngineOptions["metadata"]; notes: string[] };
  bwlimit: number | undefined;
  /** The dial and channel options, less the pairing code (used by a first try only). */
  channel: Omit<ClientChannelOptions, "pairCode">;
  pairCode: string | undefined;
  say: (line: string) => void;
  detail: (line: string) => void;
  format: ReturnType<typeof progressFormat>;
  /** --cache-max-age (a pull's own cache), in ms. */
  cacheMaxAge: number;
  /** false with --no-cache. */
  useCache: boolean;
}

export async function remoteContext(
  mode: "push" | "pull",
  options: { remote: RemoteTarget & { path: string }; flags: RemoteFlags; signal?: AbortSignal },
): Promise<RemoteContext> {
  // An alias names the address and port (a port on the command line wins) and adds options.
  const config = await loadConfig();
  const target = resolveHost(config, { host: options.remote.host, explicitPort: options.remote.port, defaultPort: DEFAULT_PORT });
  const remote: Endpoint & { path: string } = { host: target.host, port: target.port, path: options.remote.path };
  const flags = configuredFlags(mode, options.flags, config, target.alias);
  const o: EngineOptions = engineOptions(flags);
  // A pull writes here: --owner only as root. A push asks the listener, which never grants it.
  const owner = mode === "pull" ? ownerIfRoot(o.metadata) : { wanted: o.metadata, notes: [] };
  const idleTimeoutMs = parseIdleTimeout(flags.idleTimeout);
  const bwlimit = parseBwlimit(flags.bwlimit);
  if (mode === "push" && flags.cacheMaxAge !== undefined) {
    throw new UsageError("Invalid --cache-max-age for a push: the listener's cache follows its own (ssync listen --cache-max-age)");
  }
  const cacheMaxAge = parseCacheMaxAge(flags.cacheMaxAge);
  const useCache = flags.cache !== false;
  const buckets = bwlimit === undefined
    ? undefined
    : { send: new TokenBucket({ bytesPerSecond: bwlimit }), receive: new TokenBucket({ bytesPerSecond: bwlimit }) };
  const pairCode = flags.pair === undefined ? undefined : normalizePairingCode(String(flags.pair));
  const staticKey = await clientKey(flags.key);
  const knownHostsFile = flags.knownHosts ?? join(configDir(), "known_hosts");
  const peer = formatEndpoint(remote);
  const say = (line: string) => o.quiet || console.error(line);
  const detail = (line: string) => o.verbose && console.error(`ssync: ${line}`);
  if (target.alias) detail(`host alias ${target.alias.name}: ${peer}`);
  const format = progressFormat(o.progress, { quiet: o.quiet, isTTY: process.stderr.isTTY === true });
  const channel: Omit<ClientChannelOptions, "pairCode"> = {
    host: remote.host,
    port: remote.port,
    staticKey,
    knownHostsFile,
    acceptNew: flags.acceptNew === true,
    hostKey: flags.hostKey,
    warn: (message) => say(`ssync: warning: ${message}`),
    idleTimeoutMs,
    buckets,
    signal: options.signal,
  };
  return { remote, peer, flags, o, owner, bwlimit, channel, pairCode, say, detail, format, cacheMaxAge, useCache };
}

export async function runRemoteSync(
  mode: "push" | "pull",
  options: { local: string; remote: RemoteTarget & { path: string }; flags: RemoteFlags; signal?: AbortSignal },
): Promise<void> {
  const { local, signal } = options;
  const c = await remoteContext(mode, options);
  const { remote, peer, o, owner, bwlimit, pairCode, say, detail } = c;
  const remoteName = `${peer}:${remote.path}`;
  const pool = networkPool();
  let store: Storage | undefined;
  try {
    store = await openLocal(mode, local, { dryRun: o.dryRun, inplace: o.inplace, waitMs: o.waitMs, signal, say });
    detail(
      `${mode} ${mode === "push" ? `${local} -> ${remoteName}` : `${remoteName} -> ${local}`}: ` +
        describeSettings(o, bwlimit === undefined ? [] : [`bwlimit ${formatBytes(bwlimit)}/s`]),
    );
    const session = (dryRun: boolean, pair: string | undefined, phase: "sync" | "verify") =>
      remoteSession(c, { mode, local, store: store!, pool, dryRun, pair, phase, signal });
    const report = await session(o.dryRun, pairCode, "sync");
    report.metadata?.notes.push(...owner.notes);
    let verified = false;
    if (o.verify && !o.dryRun) {
      checkVerified(await session(true, undefined, "verify"), report, { source: local, destination: remoteName });
      verified = true;
    }
    const summary = mode === "push"
      ? summarize(report, { mode, source: local, destination: remoteName, verified })
      : summarize(report, { mode, source: remoteName, destination: local, verified });
    printSummary(summary, o);
  } finally {
    await store?.[Symbol.asyncDispose]();
    await pool[Symbol.asyncDispose]();
  }
}

/** --verify: the dry run `check` (a fresh hash key) must have found nothing to send. */
export function checkVerified(check: SyncReport, report: SyncReport, names: { source: string; destination: string }): void {
  if (check.local.blocksSent !== 0 || check.local.bytesZeroed !== 0 || check.size !== report.size) {
    throw new MismatchError(
      `Verification failed: a second comparison found ${check.local.blocksSent} differing blocks and ` +
        `${check.local.bytesZeroed} bytes to zero between ${names.source} and ${names.destination}`,
    );
  }
}

/**
 * One session with the listener of `c`: dial (tried again while it answers busy, for --wait
 * seconds; a pairing code only on the first try), run the client session, close.
 * `progress: false`: no progress shown (a fan-out shows one destination's). A fan-out
 * member (`source`) is never tried again: it left the fan-out when its session ended, and
 * the others went on without it.
 */
export function remoteSession(
  c: RemoteContext,
  s: {
    mode: "push" | "pull";
    local: string;
    store: Storage;
    pool: WorkerPool;
    dryRun: boolean;
    pair: string | undefined;
    phase: "sync" | "verify";
    signal?: AbortSignal;
    progress?: boolean;
    source?: SharedSource;
  },
): Promise<SyncReport> {
  const { mode, signal } = s;
  const { remote, peer, o, owner, channel: channelOptions, say, detail, format, cacheMaxAge, useCache } = c;
  const connect = async (pair: string | undefined): Promise<SyncReport> => {
    const client = await openClientChannel({ ...channelOptions, pairCode: pair });
    try {
      detail(`connected to ${peer}: host key ${fingerprint(client.conn.remoteStatic)}`);
      const { channel, activity } = client;
      const progress = new SessionProgress();
      const stopProgress = s.progress === false ? () => {} : showProgress(progress, { format, local: false, phase: s.phase, signal });
      return await runClient(channel, s.store, {
        mode,
        name: remote.path,
        blockSize: o.blockSize,
        hash: o.hash,
        dryRun: s.dryRun,
        inplace: o.inplace,
        refine: o.refine,
        compress: o.compress,
        metadata: owner.wanted,
        allowShrink: o.allowShrink,
        cacheKey: useCache,
        // A pull's own cache; with --no-cache its entry is still dropped, as the sync changes the file.
        ...(mode === "pull" && !s.dryRun
          ? {
            cache: {
              policy: { cache: new SignatureCache(clientCacheDir()), maxAgeMs: cacheMaxAge },
              path: cachePathOf(s.local),
              peer: client.conn.remoteStatic,
              warn: (message: string) => say(`ssync: warning: ${message}`),
              use: useCache,
            },
          }
          : {}),
        ...(s.source ? { source: s.source } : {}),
        pool: s.pool,
        activity,
        signal,
        progress,
      }).finally(stopProgress);
    } finally {
      await client[Symbol.asyncDispose]();
    }
  };
  if (s.source) return connect(s.pair);
  // A pairing code is used once: a try after a busy answer is already paired.
  return retryWhileBusy((n) => connect(n === 0 ? s.pair : undefined), { waitMs: o.waitMs, signal });
}

/** The path a pull's cache entry is kept under: the destination's folder resolved, its own name as given. */
function cachePathOf(local: string): string {
  const abs = nodePath.resolve(local);
  try {
    return nodePath.join(fs.realpathSync(nodePath.dirname(abs)), nodePath.basename(abs));
  } catch {
    return abs;
  }
}

/**
 * The local file: push's source, pull's destination. Either waits up to `waitMs` for
 * another ssync (a writer's lock; a commit being applied to a source).
 */
export async function openLocal(
  mode: "push" | "pull",
  path: string,
  o: { dryRun: boolean; inplace: boolean; waitMs: number; signal?: AbortSignal; say: (line: string) => void },
): Promise<Storage> {
  try {
    const opened = mode === "push" ? openSource(path, { lockWaitMs: o.waitMs }) : openDestination(path, {
      create: true,
      readOnly: o.dryRun,
      inplace: o.inplace,
      lockWaitMs: o.waitMs,
      log: (m) => o.say(`ssync: ${m}`),
    });
    return await abortable(opened, o.signal, { discard: (late) => late[Symbol.asyncDispose]() });
  } catch (e) {
    throw isBusy(e) ? busyAfterWait(e, o.waitMs) : e;
  }
}
