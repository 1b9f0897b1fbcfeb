/**
 * `ssync listen`: serve a root folder and named exports to authorized keys until SIGINT or
 * SIGTERM. stdout holds only what scripts read: its first line names the bound address and
 * the host key fingerprint (port 0 binds a free port: this is how a script learns it), then
 * the pairing code (--pair). Everything else is the log, on stderr (listener/log.ts: text or
 * --log-format json, levels, -v for per-connection detail, no own time under journald).
 *
 * 1. start: --root, every --export (check-exports.ts) and authorized_keys are checked; any
 *    problem refuses the start, naming what and why;
 * 2. serve, with a process-level safety net: an unhandled rejection or uncaught exception is
 *    logged with the connection it came from (connectionContext) and the listener keeps
 *    serving the others. It is never needed by design (every promise is observed, every
 *    failure ends its own session); a test proves hostile clients never reach it;
 * 3. SIGHUP re-reads authorized_keys and logs the keys added, removed or changed (they are
 *    read per connection anyway);
 * 4. SIGTERM or SIGINT: stop accepting, let running sessions end within --shutdown-grace
 *    seconds (a second signal cuts them at once), cut the rest, exit 0 with a log line.
 */
import fs from "node:fs";
import process from "node:process";
import { join, resolve } from "node:path";
import type { CAC } from "cac";
import { networkPool } from "./network-pool.ts";
import { recoverTree } from "../storage/recover-tree.ts";
import { configDir } from "../trust/config-dir.ts";
import { SignatureCache } from "../storage/signature-cache.ts";
import { CACHE_MAX_AGE_HELP, listenerCacheDir, parseCacheMaxAge } from "./cache-options.ts";
import { DEFAULT_PORT, formatEndpoint, parsePort } from "../net/host-port.ts";
import { fingerprint, readPrivateKey, writePrivateKey } from "../trust/keys.ts";
import { Listener } from "../listener/listener.ts";
import { checkExports } from "../listener/check-exports.ts";
import { describeCurrentConnection } from "../listener/connection-context.ts";
import { DEFAULT_SHUTDOWN_GRACE_MS } from "../listener/listener-limits.ts";
import { DEFAULT_PROGRESS_INTERVAL_MS } from "../listener/progress-log.ts";
import { PairingOffer } from "../trust/pairing-code.ts";
import { generateKeyPair, type KeyPair } from "../noise/x25519.ts";
import { UsageError } from "../util/errors.ts";
import { parseBwlimit } from "./bwlimit.ts";
import { kebabBooleans } from "./engine-options.ts";
import { readAuthorizedKeys } from "../trust/authorized-keys.ts";
import { Log, LOG_FORMATS, type LogFormat, stderrIsJournal } from "../listener/log.ts";

interface ListenFlags {
  bind?: string;
  root?: string;
  export?: string | string[];
  readOnly?: boolean;
  key?: string;
  authorizedKeys?: string;
  pair?: boolean;
  shutdownGrace?: string | number;
  progressInterval?: string | number;
  verbose?: boolean;
  logFormat?: string;
  bwlimit?: string | number;
  /** cac's `--no-cache` sets it false. */
  cache?: boolean;
  cacheMaxAge?: string | number;
  cacheDir?: string;
}

export const HOST_KEY_FILE = "host_key";

/** "HOST:PORT", "[V6]:PORT", "HOST", "PORT", ":PORT"; no host = every address. */
export function parseBind(text: string | undefined): { host: string | undefined; port: number } {
  if (text === undefined || text === "") return { host: undefined, port: DEFAULT_PORT };
  if (/^:?\d+$/.test(text)) return { host: undefined, port: parsePort(text.replace(/^:/, ""), "--bind") };
  const m = /^(?:\[([^\]]+)\]|([^:\[\]]+))(?::(\d+))?$/.exec(text);
  if (!m) throw new UsageError(`Invalid --bind ${text}: use HOST:PORT, [IPv6]:PORT or PORT`);
  return { host: m[1] ?? m[2], port: m[3] === undefined ? DEFAULT_PORT : parsePort(m[3], "--bind") };
}

function parseExports(value: string | string[] | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const item of value === undefined ? [] : Array.isArray(value) ? value : [value]) {
    const eq = String(item).indexOf("=");
    if (eq <= 0 || eq === String(item).length - 1) throw new UsageError(`Invalid --export ${item}: use NAME=PATH`);
    const name = String(item).slice(0, eq);
    if (map.has(name)) throw new UsageError(`Invalid --export ${item}: ${name} is exported twice`);
    map.set(name, resolve(String(item).slice(eq + 1)));
  }
  return map;
}

function hostKeyPath(file: string | undefined): string {
  return file ?? join(configDir(), HOST_KEY_FILE);
}

async function hostKey(file: string | undefined, log: Log): Promise<KeyPair> {
  if (file !== undefined) return await readPrivateKey(file);
  const path = hostKeyPath(undefined);
  if (!fs.existsSync(path)) {
    await writePrivateKey(path, generateKeyPair(), { comment: "ssync host key" });
    log.info(`created host key ${path}`, { file: path });
  }
  return await readPrivateKey(path);
}

async function bind(host: string | undefined, port: number, rest: Omit<Parameters<typeof Listener.start>[0], "host" | "port">): Promise<Listener> {
  if (host !== undefined) return await Listener.start({ ...rest, host, port });
  try {
    return await Listener.start({ ...rest, host: "::", port }); // dual-stack where the system allows
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code !== "EAFNOSUPPORT" && code !== "EADDRNOTAVAIL" && code !== "EINVAL") throw e;
    return await Listener.start({ ...rest, host: "0.0.0.0", port });
  }
}

/** The line the safety net writes: tests look for its start. */
export const SAFETY_NET_LINE = "ssync: internal error, the listener keeps serving";

/**
 * Installs the process-level safety net (step 2 above); returns its removal. The log names
 * the connection when the failure's async context is one (Deno gives none for exceptions
 * thrown from timers).
 */
function installSafetyNet(log: Log): () => void {
  const net = (kind: string) => (error: unknown) => {
    const where = describeCurrentConnection();
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    log.error(`${SAFETY_NET_LINE}: ${kind}${where ? ` in ${where}` : ""}: ${text}`);
  };
  const onRejection = net("unhandled rejection");
  const onException = net("uncaught exception");
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  return () => {
    process.off("unhandledRejection", onRejection);
    process.off("uncaughtException", onException);
  };
}

/**
 * Resolves with the first SIGINT or SIGTERM; `again` runs on each later one. SIGHUP runs
 * `hangup` instead of ending the process. Returns the removal of every handler.
 */
function onSignals(o: { hangup: () => void; again: () => void }): { first: Promise<string>; remove: () => void } {
  let seen = false;
  let resolve!: (sig: string) => void;
  const first = new Promise<string>((r) => (resolve = r));
  const stop = (sig: string) => () => {
    if (seen) return o.again();
    seen = true;
    resolve(sig);
  };
  const onInt = stop("SIGINT");
  const onTerm = stop("SIGTERM");
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  process.on("SIGHUP", o.hangup);
  return {
    first,
    remove: () => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      process.off("SIGHUP", o.hangup);
    },
  };
}

function parseLogFormat(value: string | undefined): LogFormat {
  const format = (value ?? "text") as LogFormat;
  if (!LOG_FORMATS.includes(format)) throw new UsageError(`Invalid --log-format ${value}: use ${LOG_FORMATS.join(" or ")}`);
  return format;
}

function parseGrace(value: string | number | undefined): number {
  if (value === undefined) return DEFAULT_SHUTDOWN_GRACE_MS;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < 0 || String(value).trim() === "") {
    throw new UsageError(`Invalid --shutdown-grace ${value}: give the seconds sessions may take to end, e.g. 10`);
  }
  return Math.round(seconds * 1000);
}

/** --progress-interval: whole seconds, 0 for never; at most a day. */
function parseProgressInterval(value: string | number | undefined): number {
  if (value === undefined) return DEFAULT_PROGRESS_INTERVAL_MS;
  const seconds = /^\d+$/.test(String(value).trim()) ? Number(value) : NaN;
  if (!Number.isInteger(seconds) || seconds > 86_400) {
    throw new UsageError(`Invalid --progress-interval ${value}: give whole seconds from 0 (never) to 86400, e.g. 60`);
  }
  return seconds * 1000;
}

export function registerListenCommand(cli: CAC, setRun: (run: () => Promise<void>) => void): void {
  kebabBooleans(cli.command("listen", "Serve files under --root (and named --export) to authorized keys")
    .option("--bind <host:port>", `Address to listen on (default: every address, port ${DEFAULT_PORT})`)
    .option("--root <dir>", "Folder whose files clients may name (required)")
    .option("--export <name=path>", "Offer PATH (a file or block device) under NAME; repeatable")
    .option("--read-only", "Refuse every write")
    .option("--key <file>", `Host private key (default: <config>/${HOST_KEY_FILE}, made on first start)`)
    .option("--authorized-keys <file>", "Client keys allowed in (default: <config>/authorized_keys)")
    .option("--pair", "Print a one-time pairing code (10 minutes) that lets one new client in")
    .option("--shutdown-grace <seconds>", `On SIGTERM/SIGINT, time running sessions get to end (default ${DEFAULT_SHUTDOWN_GRACE_MS / 1000})`)
    .option(
      "--progress-interval <seconds>",
      `Log a progress line for each running session this often (default ${DEFAULT_PROGRESS_INTERVAL_MS / 1000}; 0: never)`,
    )
    .option("-v, --verbose", "Also log each authenticated connection and the path its session opens")
    .option("--log-format <format>", "text (default) or json: one object per line (time, level, message, fields)")
    .option("--bwlimit <rate>", "Limit the data on the wire to RATE bytes per second each way, all sessions together, such as 50M (K, M, G: 1024-based)")
    .option("--cache-max-age <age>", CACHE_MAX_AGE_HELP)
    .option("--cache-dir <dir>", "Where push destinations' signature caches go (default: <folder of the host key>/signatures)")
    .option("--no-cache", "Keep no signature cache: every push reads its destination in full"))
    .example("  ssync listen --root /srv/images --pair     # prints its host key and a one-time pairing code")
    .example("  ssync listen --root /srv/images --export vm=/dev/vg0/vm --read-only")
    .action((flags: ListenFlags) => {
      setRun(async () => {
        const log = new Log({
          write: (line) => console.error(line),
          format: parseLogFormat(flags.logFormat),
          journald: stderrIsJournal(),
          verbose: flags.verbose === true,
        });
        if (!flags.root) throw new UsageError("ssync listen needs --root DIR");
        let root: string;
        try {
          root = fs.realpathSync(flags.root);
          if (!fs.statSync(root).isDirectory()) throw new Error("not a directory");
        } catch (e) {
          throw new UsageError(`Invalid --root ${flags.root}: ${(e as Error).message}`);
        }
        const exports = parseExports(flags.export);
        try {
          checkExports(exports);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
        const graceMs = parseGrace(flags.shutdownGrace);
        const progressIntervalMs = parseProgressInterval(flags.progressInterval);
        const bwlimit = parseBwlimit(flags.bwlimit);
        const cacheMaxAge = parseCacheMaxAge(flags.cacheMaxAge);
        const { host, port } = parseBind(flags.bind);
        const key = await hostKey(flags.key, log);
        const authorizedKeysFile = flags.authorizedKeys ?? join(configDir(), "authorized_keys");
        // An unsafe file fails now, not per client; a bad line is a warning, and skipped.
        const keys = await readAuthorizedKeys(authorizedKeysFile, { warn: (m) => log.warn(m, { file: authorizedKeysFile }) });
        const pairing = flags.pair ? new PairingOffer() : undefined;
        const pool = networkPool();
        let listener: Listener | undefined;
        const removeNet = installSafetyNet(log);
        const signals = onSignals({
          hangup: () => {
            if (listener === undefined) return;
            listener.rereadAuthorizedKeys().catch((e) =>
              log.error(
                `SIGHUP: cannot re-read ${authorizedKeysFile}: ${(e as Error).message}; each connection is still checked against the file as it is then`,
                { file: authorizedKeysFile },
              )
            );
          },
          again: () => listener?.stopNow(),
        });
        try {
          // Files it serves are whole before the first session: interrupted syncs are completed or rolled back.
          await recoverTree(root, { exports: exports.values(), log: (m) => log.info(m) });
          listener = await bind(host, port, {
            root,
            exports,
            readOnly: flags.readOnly === true,
            hostKey: key,
            authorizedKeysFile,
            pairing,
            pool,
            log,
            progressIntervalMs,
            authorizedKeys: keys,
            bwlimit,
            ...(flags.cache === false ? {} : {
              cache: { cache: new SignatureCache(flags.cacheDir ?? listenerCacheDir(hostKeyPath(flags.key))), maxAgeMs: cacheMaxAge },
            }),
          });
          const address = formatEndpoint({ host: listener.host.replace(/^::ffff:/, ""), port: listener.port });
          console.log(`ssync listening on ${address} host key ${fingerprint(key.publicKey)}`);
          log.info(
            `listening on ${address} host key ${fingerprint(key.publicKey)}: root ${root}, ${exports.size} export${exports.size === 1 ? "" : "s"}, ` +
              `${keys.length} authorized key${keys.length === 1 ? "" : "s"}${flags.readOnly ? ", read-only" : ""}`,
            { address, hostKey: fingerprint(key.publicKey), root, exports: exports.size, keys: keys.length, readOnly: flags.readOnly === true },
          );
          if (pairing) {
            const until = new Date(pairing.expiresAt).toTimeString().slice(0, 5);
            console.log(`pairing code ${pairing.code} (single use, valid until ${until}): on the client run`);
            console.log(`  ssync push --pair ${pairing.code} FILE HOST:${listener.port}`);
          }
          const sig = await signals.first;
          log.info(`${sig}: stopping: no new connections; running sessions get ${graceMs / 1000} s to end`, { signal: sig });
          const { sessions, cut } = await listener.shutdown({ graceMs });
          log.info(`${sig}: stopped (${sessions} session${sessions === 1 ? "" : "s"} running at the signal, ${cut} cut)`, { signal: sig, sessions, cut });
        } finally {
          signals.remove();
          await listener?.close();
          await pool[Symbol.asyncDispose]();
          removeNet();
        }
      });
    });
}
