/**
 * The folders and key a CLI listener test starts from: a config folder holding
 * authorized_keys with one client key in it, an empty root, and where the client pins hosts.
 */
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
