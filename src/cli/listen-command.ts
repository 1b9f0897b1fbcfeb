/**
 * `ssync listen`: serve a root folder and named exports to authorized keys until SIGINT or
 * SIGTERM. The first stdout line names the bound address and the host key fingerprint.
 */
import fs from "node:fs";
import process from "node:process";
import { join, resolve } from "node:path";
import type { CAC } from "cac";
import { WorkerPool } from "../engine/worker-pool.ts";
import { configDir } from "../trust/config-dir.ts";
import { DEFAULT_PORT, formatEndpoint, parsePort } from "../net/host-port.ts";
import { fingerprint, readPrivateKey, writePrivateKey } from "../trust/keys.ts";
import { Listener } from "../listener/listener.ts";
import { PairingOffer } from "../trust/pairing-code.ts";
import { generateKeyPair, type KeyPair } from "../noise/x25519.ts";
import { UsageError } from "../util/errors.ts";
import { kebabBooleans } from "./engine-options.ts";
import { readAuthorizedKeys } from "../trust/authorized-keys.ts";

interface ListenFlags {
  bind?: string;
  root?: string;
  export?: string | string[];
  readOnly?: boolean;
  key?: string;
  authorizedKeys?: string;
  pair?: boolean;
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

async function hostKey(file: string | undefined): Promise<KeyPair> {
  if (file !== undefined) return await readPrivateKey(file);
  const path = join(configDir(), HOST_KEY_FILE);
  if (!fs.existsSync(path)) {
    await writePrivateKey(path, generateKeyPair(), { comment: "ssync host key" });
    console.error(`ssync: created host key ${path}`);
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

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => () => resolve(sig);
    process.once("SIGINT", on("SIGINT"));
    process.once("SIGTERM", on("SIGTERM"));
  });
}

export function registerListenCommand(cli: CAC, setRun: (run: () => Promise<void>) => void): void {
  kebabBooleans(cli.command("listen", "Serve files under --root (and named --export) to authorized keys")
    .option("--bind <host:port>", `Address to listen on (default: every address, port ${DEFAULT_PORT})`)
    .option("--root <dir>", "Folder whose files clients may name (required)")
    .option("--export <name=path>", "Offer PATH (a file or block device) under NAME; repeatable")
    .option("--read-only", "Refuse every write")
    .option("--key <file>", `Host private key (default: <config>/${HOST_KEY_FILE}, made on first start)`)
    .option("--authorized-keys <file>", "Client keys allowed in (default: <config>/authorized_keys)")
    .option("--pair", "Print a one-time pairing code (10 minutes) that lets one new client in"))
    .action((flags: ListenFlags) => {
      setRun(async () => {
        if (!flags.root) throw new UsageError("ssync listen needs --root DIR");
        let root: string;
        try {
          root = fs.realpathSync(flags.root);
          if (!fs.statSync(root).isDirectory()) throw new Error("not a directory");
        } catch (e) {
          throw new UsageError(`Invalid --root ${flags.root}: ${(e as Error).message}`);
        }
        const exports = parseExports(flags.export);
        const { host, port } = parseBind(flags.bind);
        const key = await hostKey(flags.key);
        const authorizedKeysFile = flags.authorizedKeys ?? join(configDir(), "authorized_keys");
        await readAuthorizedKeys(authorizedKeysFile); // a malformed or unsafe file fails now, not per client
        const pairing = flags.pair ? new PairingOffer() : undefined;
        const pool = new WorkerPool();
        let listener: Listener | undefined;
        try {
          listener = await bind(host, port, {
            root,
            exports,
            readOnly: flags.readOnly === true,
            hostKey: key,
            authorizedKeysFile,
            pairing,
            pool,
            log: (line) => console.error(line),
          });
          const address = formatEndpoint({ host: listener.host.replace(/^::ffff:/, ""), port: listener.port });
          console.log(`ssync listening on ${address} host key ${fingerprint(key.publicKey)}`);
          if (pairing) {
            const until = new Date(pairing.expiresAt).toTimeString().slice(0, 5);
            console.log(`pairing code ${pairing.code} (single use, valid until ${until}): on the client run`);
            console.log(`  ssync push --pair ${pairing.code} FILE HOST:${listener.port}`);
          }
          const sig = await waitForSignal();
          console.error(`ssync: ${sig}: stopping`);
        } finally {
          await listener?.close();
          await pool[Symbol.asyncDispose]();
        }
      });
    });
}
