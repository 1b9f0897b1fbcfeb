/**
 * The set-up of the CLI network tests: a client and a listener config folder (XDG_CONFIG_HOME)
 * in one temporary folder, the client's key in the listener's authorized_keys, and a real
 * `ssync listen` on 127.0.0.1 serving dir/root.
 * 1. `makeCliPair`: the folders and the key (by `ssync keygen`, or made in this process);
 * 2. `withCliSetup`: those in a fresh temporary folder, the listener started, optionally the
 *    listener's host key pinned by a first push; the listener is stopped whatever the body does.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import type { KeyPair } from "../../src/noise/x25519.ts";
import { authorize, type CliListener, type CliResult, makeKey, runCli, startCliListener } from "./network.ts";
import { makeSparseFile, withTempDir } from "./sparse.ts";

export interface CliPair {
  /** The client's XDG_CONFIG_HOME; its key is ssync/id_ssync under it. */
  client: string;
  /** The listener's XDG_CONFIG_HOME. */
  server: string;
  /** dir/root, made empty. */
  root: string;
  /** The client's key pair when made in this process (`keygen: false`); null after `ssync keygen`. */
  key: KeyPair | null;
  /** What `ssync keygen` said; null when the key was made in this process. */
  keygen: CliResult | null;
}

export interface CliPairOptions {
  /** Default dir/client-config. */
  client?: string;
  /** Default dir/server-config. */
  server?: string;
  /** false: the key is made in this process instead of by `ssync keygen` (default true). */
  keygen?: boolean;
  /** false: the listener's authorized_keys is left absent (default true). */
  authorize?: boolean;
}

/** Config folders for a client and a listener in `dir`, and dir/root; the client's key authorized unless told not to. */
export async function makeCliPair(dir: string, options: CliPairOptions = {}): Promise<CliPair> {
  const client = options.client ?? path.join(dir, "client-config");
  const server = options.server ?? path.join(dir, "server-config");
  const root = path.join(dir, "root");
  fs.mkdirSync(root);
  const privateKey = path.join(client, "ssync", "id_ssync");
  const authorizedKeys = path.join(server, "ssync", "authorized_keys");
  fs.mkdirSync(path.join(server, "ssync"), { recursive: true });
  if (options.keygen === false) {
    fs.mkdirSync(path.dirname(privateKey), { recursive: true });
    const key = await makeKey(privateKey);
    if (options.authorize !== false) authorize(authorizedKeys, key);
    return { client, server, root, key, keygen: null };
  }
  const keygen = await runCli(["keygen"], { config: client });
  assert.equal(keygen.code, 0, keygen.stderr);
  if (options.authorize !== false) fs.copyFileSync(`${privateKey}.pub`, authorizedKeys);
  return { client, server, root, key: null, keygen };
}

export interface CliSetup extends CliPair {
  /** The temporary folder holding everything else. */
  dir: string;
  listener: CliListener;
  /** "127.0.0.1:PORT" of the listener. */
  remote: string;
}

export interface CliSetupOptions extends Pick<CliPairOptions, "keygen" | "authorize"> {
  /** After `--root ROOT`. */
  listenArgs?: string[];
  /** The listener's extra environment, given the temporary folder. */
  env?: (dir: string) => Record<string, string>;
  /** The listener's umask (default: the test's). */
  umask?: number;
  /**
   * Pins the listener's host key in the client's known_hosts by a first push (of a 1 MiB
   * dir/first.img to first.img, with --accept-new), so later commands need no --accept-new.
   */
  pinHostKey?: boolean;
}

/** Runs `body` with a fresh client, a listener that authorizes it, and the listener running. */
export async function withCliSetup(options: CliSetupOptions, body: (s: CliSetup) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const pair = await makeCliPair(dir, { keygen: options.keygen, authorize: options.authorize });
    const listener = await startCliListener(["--root", pair.root, ...(options.listenArgs ?? [])], {
      config: pair.server,
      env: options.env?.(dir),
      umask: options.umask,
    });
    try {
      const remote = `127.0.0.1:${listener.port}`;
      if (options.pinHostKey) {
        const first = path.join(dir, "first.img");
        makeSparseFile(first, { size: 1 << 20, chunks: [{ offset: 0, length: 4096 }] });
        const r = await runCli(["push", "--accept-new", first, `${remote}:first.img`], { config: pair.client });
        assert.equal(r.code, 0, r.stderr);
      }
      await body({ ...pair, dir, listener, remote });
    } finally {
      await listener.stop();
    }
  });
}
