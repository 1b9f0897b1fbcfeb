// The bench's network: keys and config folders for a client and a listener, a real
// `ssync listen` per measured run (its peak RSS read before it stops), and a rate-limited
// link — two network namespaces joined by a veth pair, an htb qdisc at RATE on both ends.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { median, run, spawnDaemon, vmHWM } from "./bench-proc.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * Config folders under `dir`: the client's (XDG_CONFIG_HOME, key ssync/id_ssync), the
 * listener's (host key, authorized_keys holding the client's key). Keys made by `ssync keygen`.
 */
export async function makeTrust(ssync, dir) {
  const client = path.join(dir, "client-config");
  const server = path.join(dir, "server-config");
  fs.mkdirSync(path.join(client, "ssync"), { recursive: true });
  fs.mkdirSync(server, { recursive: true });
  const clientKey = path.join(client, "ssync", "id_ssync");
  const hostKey = path.join(server, "host_key");
  const authorizedKeys = path.join(server, "authorized_keys");
  await run(ssync[0], [...ssync.slice(1), "keygen", "-f", clientKey], { env: { ...process.env, XDG_CONFIG_HOME: client } });
  await run(ssync[0], [...ssync.slice(1), "keygen", "-f", hostKey], { env: { ...process.env, XDG_CONFIG_HOME: server } });
  fs.copyFileSync(`${clientKey}.pub`, authorizedKeys);
  fs.chmodSync(authorizedKeys, 0o600);
  return {
    // A pull's signature cache goes to the client's state folder: this one, not the machine's.
    clientEnv: { ...process.env, XDG_CONFIG_HOME: client, XDG_STATE_HOME: path.join(dir, "client-state") },
    serverEnv: { ...process.env, XDG_CONFIG_HOME: server },
    hostKey,
    authorizedKeys,
  };
}

/**
 * Starts `ssync listen` serving `root` on `host` (a free port), inside network namespace
 * `netns` when given. Resolves once it prints its address; `stop()` reads its peak RSS
 * (VmHWM) and then stops it (SIGTERM).
 */
export async function startListener(ssync, trust, { root, host = "127.0.0.1", netns }) {
  const args = [...ssync.slice(1), "listen", "--bind", `${host}:0`, "--root", root, "--key", trust.hostKey, "--authorized-keys", trust.authorizedKeys];
  const [cmd, argv] = netns ? ["ip", ["netns", "exec", netns, ssync[0], ...args]] : [ssync[0], args];
  // `ip netns exec` and scripts/ssync exec their command: the child's pid is the listener's.
  const d = spawnDaemon(cmd, argv, { env: trust.serverEnv });
  const m = await d.waitFor(/listening on \S*:(\d+)/);
  const port = Number(m[1]);
  return {
    port,
    remote: `${host}:${port}`,
    hwmKiB: () => vmHWM(d.child.pid),
    async stop() {
      const rssKiB = vmHWM(d.child.pid);
      await d.stop();
      return rssKiB;
    },
  };
}

const sh = (args) => {
  const r = spawnSync(args[0], args.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`Cannot set up the link: ${args.join(" ")}: ${(r.stderr || String(r.error)).trim()}`);
};

/**
 * Two namespaces (NAME-a holds the listener at 10.231.X.1, NAME-b the client at .2) joined by
 * a veth pair, each end shaped by an htb class at `rate` (e.g. "1gbit"). `destroy()` deletes
 * them (idempotent; also called from the bench's exit handler).
 */
export function makeLink(name, rate) {
  const a = `${name}-a`;
  const b = `${name}-b`;
  const subnet = `10.231.${process.pid % 250}`;
  const link = {
    a,
    b,
    hostA: `${subnet}.1`,
    hostB: `${subnet}.2`,
    rate,
    destroyed: false,
    destroy() {
      if (link.destroyed) return;
      link.destroyed = true;
      for (const ns of [a, b]) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
    },
  };
  try {
    sh(["ip", "netns", "add", a]);
    sh(["ip", "netns", "add", b]);
    const va = `${name.slice(0, 11)}va`;
    const vb = `${name.slice(0, 11)}vb`;
    sh(["ip", "link", "add", va, "type", "veth", "peer", "name", vb]);
    sh(["ip", "link", "set", va, "netns", a]);
    sh(["ip", "link", "set", vb, "netns", b]);
    for (const [ns, dev, ip] of [[a, va, link.hostA], [b, vb, link.hostB]]) {
      sh(["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", dev]);
      sh(["ip", "-n", ns, "link", "set", dev, "up"]);
      sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
      sh(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10"]);
      sh(["tc", "-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", rate, "ceil", rate]);
    }
  } catch (e) {
    link.destroy();
    throw e;
  }
  return link;
}

/** The link's rate as a plain TCP transfer sees it: bytes/s, median of `runs` transfers. */
export async function linkRate(link, node, bytes, runs) {
  const tool = path.join(here, "bench-tcp.mjs");
  const rates = [];
  for (let i = 0; i < runs; i++) {
    const port = String(40000 + ((process.pid + i) % 20000));
    const sink = spawnDaemon("ip", ["netns", "exec", link.a, node, tool, "sink", link.hostA, port]);
    await sink.waitFor(/ready/);
    const r = await run("ip", ["netns", "exec", link.b, node, tool, "send", link.hostA, port, String(bytes)]);
    await sink.exited;
    rates.push(bytes / Number(r.stdout.trim()));
  }
  return median(rates);
}
