/**
 * The folders and key a CLI listener test starts from: a config folder holding
 * authorized_keys with one client key in it, an empty root, and where the client pins hosts.
 */
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { KeyPair } from "../../src/noise/x25519.ts";
import { authorize, makeKey } from "./network.ts";
import { withTempDir } from "./sparse.ts";

export interface ListenerSetup {
  dir: string;
  config: string;
  root: string;
  authorizedKeys: string;
  key: KeyPair;
  knownHosts: string;
}

export async function withListenerSetup(body: (s: ListenerSetup) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const config = path.join(dir, "config");
    const root = path.join(dir, "root");
    fs.mkdirSync(path.join(config, "ssync"), { recursive: true });
    fs.mkdirSync(root);
    const authorizedKeys = path.join(config, "ssync", "authorized_keys");
    const key = await makeKey(path.join(dir, "client_key"));
    authorize(authorizedKeys, key);
    await body({ dir, config, root, authorizedKeys, key, knownHosts: path.join(dir, "known_hosts") });
  });
}

/** What clientSync needs to reach a listener on 127.0.0.1. */
export function serverOf(listener: { port: number }) {
  return { listener: { port: listener.port, address: `127.0.0.1:${listener.port}` } };
}

/** Resolves with the exit code of `child` (an `ssync listen`), rejects after `ms`. */
export function exitOf(child: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => reject(new Error(`ssync listen did not exit within ${ms} ms`)), ms);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}
