/**
 * The config file, <config>/config: default options and host aliases, written by hand in the
 * shape of ssh_config:
 *
 *     # defaults for push, pull and sync (before the first host line)
 *     compress always
 *     wait 30
 *
 *     host backup                      # `ssync push vm.img backup:` dials this
 *         address 192.168.1.20
 *         port 7071
 *         host-key SHA256:…            # as --host-key: refuse any other key
 *         key /etc/ssync/backup_key    # as --key
 *         idle-timeout 120             # options here apply to this alias only
 *
 * 1. A line is `KEY VALUE` (or `KEY = VALUE`); `#` at the start of a line or after a space
 *    starts a comment. Lines after `host NAME` belong to that alias until the next host line.
 * 2. Every key and value is checked when the file is read, before anything runs: an unknown
 *    key (with the nearest known one), a bad value, a duplicate — a ConfigError (exit 2)
 *    naming the file and line.
 * 3. The file names keys and fingerprints, so it is checked as authorized_keys is
 *    (trust-file.ts): writable by nobody but root and us.
 *
 * Precedence: the command line, then the alias's options, then the defaults. An option a
 * command does not take (idle-timeout for `ssync sync`) is left out for that command.
 */
import { promises as fs } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";
import { parsePort } from "../net/host-port.ts";
import { configDir } from "../trust/config-dir.ts";
import { readTrustFile } from "../trust/trust-file.ts";
import { ConfigError } from "../util/errors.ts";
import { parseBwlimit } from "./bwlimit.ts";
import { didYouMean } from "./did-you-mean.ts";
import { parseBlockSize, parseCompress, parseHash, parseIdleTimeout, parseWait } from "./engine-options.ts";

export const CONFIG_FILE = "config";

/** A config file is a few dozen lines; anything this large is a mistake. */
const MAX_CONFIG_BYTES = 1 << 20;

type Command = "sync" | "push" | "pull";

/** An option the file may set: the flag it stands for, the commands that take it, its check. */
interface OptionKey {
  flag: string;
  commands: readonly Command[];
  /** Throws (UsageError) on a bad value; returns the value as the flag holds it. */
  parse: (text: string) => string | boolean;
}

const ALL: readonly Command[] = ["sync", "push", "pull"];
const REMOTE: readonly Command[] = ["push", "pull"];
const checked = (check: (text: string) => unknown) => (text: string) => (check(text), text);

const OPTION_KEYS: Record<string, OptionKey> = {
  "block-size": { flag: "blockSize", commands: ALL, parse: checked(parseBlockSize) },
  hash: { flag: "hash", commands: ALL, parse: checked(parseHash) },
  compress: { flag: "compress", commands: ALL, parse: checked(parseCompress) },
  wait: { flag: "wait", commands: ALL, parse: checked(parseWait) },
  verify: { flag: "verify", commands: ALL, parse: (text) => yesNo(text, "verify") },
  "idle-timeout": { flag: "idleTimeout", commands: REMOTE, parse: checked(parseIdleTimeout) },
  bwlimit: { flag: "bwlimit", commands: REMOTE, parse: checked(parseBwlimit) },
};

const HOST_KEYS = ["address", "port", "host-key", "key"] as const;
type HostKey = typeof HOST_KEYS[number];

export interface HostAlias {
  name: string;
  address?: string;
  port?: number;
  /** Expected host-key fingerprint (as --host-key). */
  hostKey?: string;
  /** Private key file (as --key). */
  key?: string;
  /** Options for this alias only, by flag name. */
  options: Record<string, string | boolean>;
}

export interface Config {
  /** The file read; null when there is none. */
  file: string | null;
  /** Options for every command that takes them, by flag name (camelCase). */
  defaults: Record<string, string | boolean>;
  hosts: Map<string, HostAlias>;
}

function yesNo(text: string, key: string): boolean {
  if (/^(yes|true|on)$/i.test(text)) return true;
  if (/^(no|false|off)$/i.test(text)) return false;
  throw new ConfigError(`${key} takes yes or no, not ${text}`);
}

const ALIAS_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** Parses the text of a config file; throws a ConfigError naming `file` and the line. */
export function parseConfig(text: string, options: { file: string; home?: string }): Config {
  const config: Config = { file: options.file, defaults: {}, hosts: new Map() };
  let host: HostAlias | undefined;
  const seen = new Set<string>();
  text.split("\n").forEach((raw, i) => {
    const fail = (reason: string): never => {
      throw new ConfigError(`Invalid config ${options.file} line ${i + 1}: ${reason}`);
    };
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (line === "") return;
    const m = /^([A-Za-z][A-Za-z0-9-]*)\s*(?:=\s*|\s+)(.*)$/.exec(line) ?? /^([A-Za-z][A-Za-z0-9-]*)()$/.exec(line);
    if (m === null) return fail(`expected "KEY VALUE", got ${JSON.stringify(raw.trim())}`);
    const key = m[1].toLowerCase();
    const value = m[2].trim();
    if (value === "") return fail(`${key} needs a value`);
    if (key === "host") {
      if (!ALIAS_NAME.test(value)) return fail(`host ${value}: an alias is letters, digits, ".", "_" and "-" (no colon, no space)`);
      if (config.hosts.has(value)) return fail(`host ${value} is defined twice`);
      host = { name: value, options: {} };
      config.hosts.set(value, host);
      seen.clear();
      return;
    }
    const scope = host ? `host ${host.name}` : "the defaults";
    if (seen.has(key)) return fail(`${key} is set twice in ${scope}`);
    seen.add(key);
    const option = OPTION_KEYS[key];
    if (option !== undefined) {
      try {
        (host?.options ?? config.defaults)[option.flag] = option.parse(value);
      } catch (e) {
        return fail((e as Error).message);
      }
      return;
    }
    if (!(HOST_KEYS as readonly string[]).includes(key)) {
      const known = ["host", ...Object.keys(OPTION_KEYS), ...HOST_KEYS];
      return fail(`unknown key ${key}${didYouMean(key, known)}`);
    }
    if (host === undefined) return fail(`${key} belongs to a host alias: put it after a "host NAME" line`);
    hostValue(host, key as HostKey, value, { fail, home: options.home });
  });
  return config;
}

function hostValue(host: HostAlias, key: HostKey, value: string, o: { fail: (reason: string) => never; home?: string }): void {
  switch (key) {
    case "address": {
      const address = value.replace(/^\[(.*)\]$/, "$1");
      if (address === "" || /[\s\/\[\]]/.test(address)) o.fail(`address ${value}: give a host name or an IP address`);
      host.address = address;
      return;
    }
    case "port":
      try {
        host.port = parsePort(value, `host ${host.name}`);
      } catch (e) {
        o.fail((e as Error).message);
      }
      if (host.port === 0) o.fail(`port 0 in host ${host.name}: use 1..65535`);
      return;
    case "host-key":
      if (!FINGERPRINT.test(value)) o.fail(`host-key ${value}: expected a fingerprint such as ssync listen prints (SHA256: and 43 characters)`);
      host.hostKey = value;
      return;
    case "key":
      if (value.startsWith("~/")) host.key = join(o.home ?? homedir(), value.slice(2));
      else if (isAbsolute(value)) host.key = value;
      else o.fail(`key ${value}: give an absolute path (or ~/…)`);
      return;
  }
}

/**
 * Reads <config>/config (or `file`); an empty config when there is none. As OpenSSH does with
 * ~/.ssh/config, only a file that exists is checked: a missing one is no reason to refuse a
 * sync, even under a folder others may write (a file they put there later is refused).
 */
export async function loadConfig(file: string = join(configDir(), CONFIG_FILE)): Promise<Config> {
  const empty: Config = { file: null, defaults: {}, hosts: new Map() };
  let text: string | null;
  try {
    await fs.lstat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return empty;
  }
  try {
    text = await readTrustFile(file, { what: "config", maxBytes: MAX_CONFIG_BYTES });
  } catch (e) {
    throw new ConfigError((e as Error).message, { cause: e });
  }
  if (text === null) return empty;
  return parseConfig(text, { file });
}

/**
 * `flags` with what the config adds for `command`: the alias's options, then the defaults,
 * each only where the command line left the flag unset and the command takes it; an alias's
 * key and host-key stand for --key and --host-key.
 */
export function configuredFlags<F extends object>(command: Command, flags: F, config: Config, alias?: HostAlias): F {
  const merged: Record<string, unknown> = { ...flags };
  const fill = (options: Record<string, string | boolean>) => {
    for (const [flag, value] of Object.entries(options)) {
      const key = Object.values(OPTION_KEYS).find((o) => o.flag === flag)!;
      if (key.commands.includes(command) && merged[flag] === undefined) merged[flag] = value;
    }
  };
  if (alias !== undefined) {
    fill(alias.options);
    if (merged.key === undefined && alias.key !== undefined) merged.key = alias.key;
    if (merged.hostKey === undefined && alias.hostKey !== undefined) merged.hostKey = alias.hostKey;
  }
  fill(config.defaults);
  return merged as F;
}

/**
 * The address and port to dial for `host` as the command line gave it: an alias's address
 * (else the name itself) and port, unless the command line gave one (`explicitPort`).
 */
export function resolveHost(
  config: Config,
  target: { host: string; explicitPort: number | undefined; defaultPort: number },
): { host: string; port: number; alias?: HostAlias } {
  const alias = config.hosts.get(target.host);
  return {
    host: alias?.address ?? target.host,
    port: target.explicitPort ?? alias?.port ?? target.defaultPort,
    ...(alias ? { alias } : {}),
  };
}
