/**
 * Helpers for the network tests: keys and config folders, an in-process listener, client
 * sessions without the CLI, and the CLI as a child process (scripts/ssync).
 */
import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { decode } from "../../protocol/codec.ts";
import type { Message } from "../../protocol/messages.ts";
import type { CompressMode } from "../../src/engine/compress-policy.ts";
import type { WorkerPool } from "../../src/engine/worker-pool.ts";
import { dial } from "../../src/net/dial.ts";
import { IncompleteOnLossChannel } from "../../src/net/incomplete-on-loss-channel.ts";
import { formatPublicKey, writePrivateKey } from "../../src/trust/keys.ts";
import { Listener, type ListenerOptions } from "../../src/listener/listener.ts";
import { Log } from "../../src/listener/log.ts";
import type { RecordChannel } from "../../src/net/record-channel.ts";
import { joinRecord } from "../../src/util/record-parts.ts";
import { generateKeyPair, type KeyPair } from "../../src/noise/x25519.ts";
import { runClient, type SyncReport } from "../../src/session/client-session.ts";
import { openDestination } from "../../src/storage/open-destination.ts";
import { openSource } from "../../src/storage/open-source.ts";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const SSYNC = path.join(REPO, "scripts", "ssync");

/** A key pair written to `file` (0600) and `file`.pub. */
export async function makeKey(file: string): Promise<KeyPair> {
  const pair = generateKeyPair();
  await writePrivateKey(file, pair, { comment: "test" });
  return pair;
}

export function authorize(file: string, key: KeyPair, options: { options?: string } = {}): void {
  const prefix = options.options ? options.options + " " : "";
  fs.appendFileSync(file, prefix + formatPublicKey(key.publicKey, { comment: "test" }) + "\n", { mode: 0o600 }); // Deno creates 0666 without a mode
}

export interface TestServer {
  listener: Listener;
  hostKey: KeyPair;
  root: string;
  authorizedKeys: string;
  logs: string[];
}

/** A listener on 127.0.0.1 (random port) serving `root`, started in this process. */
export async function startListener(
  dir: string,
  options: { pool: WorkerPool } & Partial<ListenerOptions>,
): Promise<TestServer> {
  const root = options.root ?? path.join(dir, "root");
  fs.mkdirSync(root, { recursive: true });
  const authorizedKeys = options.authorizedKeysFile ?? path.join(dir, "authorized_keys");
  const hostKey = options.hostKey ?? generateKeyPair();
  const logs: string[] = [];
  const listener = await Listener.start({
    host: "127.0.0.1",
    port: 0,
    hostKey,
    authorizedKeysFile: authorizedKeys,
    log: new Log({ write: (line) => logs.push(line) }),
    ...options,
    root: fs.realpathSync(root),
  });
  return { listener, hostKey, root: fs.realpathSync(root), authorizedKeys, logs };
}

/** One client session (push or pull) against a listener on 127.0.0.1, trusting its host key. */
export async function clientSync(
  server: { listener: { port: number; address: string } },
  options: {
    mode: "push" | "pull";
    local: string;
    name: string;
    key: KeyPair;
    pool: WorkerPool;
    knownHosts: string;
    dryRun?: boolean;
    blockSize?: number;
    /** Refine differing blocks to pages (runClient's default: true). */
    refine?: boolean;
    /** --compress (default "auto"). */
    compress?: CompressMode;
    /** Wraps the client's channel (tests that hold a session at a given point). */
    wrap?: (channel: RecordChannel) => RecordChannel;
  },
): Promise<SyncReport> {
  const dryRun = options.dryRun ?? false;
  const store = options.mode === "push"
    ? await openSource(options.local)
    : await openDestination(options.local, { create: !dryRun, readOnly: dryRun });
  try {
    const conn = await dial({
      host: "127.0.0.1",
      port: server.listener.port,
      staticKey: options.key,
      knownHostsFile: options.knownHosts,
      acceptNew: true,
      timeoutMs: 5000,
    });
    try {
      const lossy = new IncompleteOnLossChannel(conn.channel, { peer: server.listener.address });
      const channel = options.wrap ? options.wrap(lossy) : lossy;
      return await runClient(channel, store, {
        mode: options.mode,
        name: options.name,
        blockSize: options.blockSize ?? 65536,
        hash: "hmac-sha256",
        dryRun,
        compress: options.compress,
        pool: options.pool,
        refine: options.refine,
      });
    } finally {
      await conn[Symbol.asyncDispose]().catch(() => {});
    }
  } finally {
    await store[Symbol.asyncDispose]();
  }
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `scripts/ssync ARGS` to completion with its own XDG_CONFIG_HOME. */
export function runCli(args: string[], options: { config: string; cwd?: string; timeoutMs?: number; umask?: number }): Promise<CliResult> {
  const child = spawnCli(args, options);
  return finished(child, options.timeoutMs ?? 60_000);
}

/** `umask`: the process runs with that umask (set by sh, which then execs ssync: same pid). `uid`, `gid`: it runs as that user (root only). */
export function spawnCli(args: string[], options: { config: string; cwd?: string; env?: Record<string, string>; umask?: number; uid?: number; gid?: number }): ChildProcess {
  const [file, argv] = options.umask === undefined
    ? [SSYNC, args]
    : ["sh", ["-c", `umask ${options.umask.toString(8).padStart(3, "0")} && exec "$0" "$@"`, SSYNC, ...args]];
  return spawn(file, argv, {
    cwd: options.cwd,
    env: { ...process.env, XDG_CONFIG_HOME: options.config, SSYNC_WORKERS: "2", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
    uid: options.uid,
    gid: options.gid,
  });
}

export function finished(child: ChildProcess, timeoutMs: number): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (c) => (stdout += c));
  child.stderr!.on("data", (c) => (stderr += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ssync timed out after ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export interface CliListener {
  child: ChildProcess;
  port: number;
  fingerprint: string;
  /** Lines after the first on stdout (pairing code). */
  stdoutLines: string[];
  stderr: () => string;
  stop: () => Promise<void>;
}

/** `ssync listen --bind 127.0.0.1:0 ARGS` as a child; resolves once it printed its port. */
export function startCliListener(
  args: string[],
  options: { config: string; cwd?: string; env?: Record<string, string>; umask?: number; uid?: number; gid?: number },
): Promise<CliListener> {
  const child = spawnCli(["listen", "--bind", "127.0.0.1:0", ...args], options);
  let out = "";
  let err = "";
  child.stderr!.on("data", (c) => (err += c));
  const exited = new Promise<void>((r) => child.once("close", () => r()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`ssync listen did not start; stderr: ${err}`));
    }, 20_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      reject(new Error(`ssync listen exited with ${code}: ${err}`));
    });
    const lines: string[] = [];
    child.stdout!.on("data", (c) => {
      out += c;
      const m = /^ssync listening on 127\.0\.0\.1:(\d+) host key (SHA256:\S+)\n/.exec(out);
      lines.splice(0, lines.length, ...out.split("\n").slice(1));
      if (m && timerActive) {
        timerActive = false;
        clearTimeout(timer);
        resolve({
          child,
          port: Number(m[1]),
          fingerprint: m[2],
          stdoutLines: lines,
          stderr: () => err,
          stop: async () => {
            child.kill("SIGTERM");
            const t = setTimeout(() => child.kill("SIGKILL"), 5000);
            await exited;
            clearTimeout(t);
          },
        });
      }
    });
    let timerActive = true;
  });
}

/** Resolves when `check` is true, polling every `everyMs`; rejects after `timeoutMs`. */
export async function waitFor(check: () => boolean, options: { timeoutMs: number; everyMs?: number; what: string }): Promise<void> {
  const end = Date.now() + options.timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${options.what}`);
    await new Promise((r) => setTimeout(r, options.everyMs ?? 10));
  }
}

/**
 * A channel whose `n`-th send (counting only messages of `type`, when given) waits until
 * `release()`; `reached` resolves when it gets there. Later sends go on, but the held
 * message's range cannot complete, so the session cannot reach COMMIT. A client's second
 * send comes after OPEN_OK: a push held there keeps the server's lock.
 */
export function holdAtSend(n: number, options: { type?: Message["type"] } = {}): {
  wrap: (inner: RecordChannel) => RecordChannel;
  reached: Promise<void>;
  release: () => void;
} {
  let reach!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const released = new Promise<void>((r) => (release = r));
  let sends = 0;
  const wrap = (inner: RecordChannel): RecordChannel => ({
    async send(record) {
      if ((options.type === undefined || decode(joinRecord(record)).type === options.type) && ++sends === n) {
        reach();
        await released;
      }
      return inner.send(record);
    },
    receive: () => inner.receive(),
    close: (reason) => inner.close(reason),
    [Symbol.asyncDispose]: () => inner[Symbol.asyncDispose](),
  });
  return { wrap, reached, release };
}
