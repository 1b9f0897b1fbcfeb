/**
 * `ssync known-hosts list`: the pinned host keys, one per line (host:port, fingerprint, comment).
 * `ssync known-hosts remove HOST[:PORT]`: forgets HOST's pin (as ssh-keygen -R), e.g. after its
 * listener's key was replaced on purpose; a host alias of the config file names its address
 * and port. Nothing pinned is no error: it says so and exits 0.
 */
import { join } from "node:path";
import type { CAC } from "cac";
import { DEFAULT_PORT } from "../net/host-port.ts";
import { configDir } from "../trust/config-dir.ts";
import { fingerprint } from "../trust/keys.ts";
import { knownHostName, listKnownHosts, removeKnownHost } from "../trust/known-hosts.ts";
import { UsageError } from "../util/errors.ts";
import { loadConfig, resolveHost } from "./config-file.ts";
import { didYouMean } from "./did-you-mean.ts";
import { parseRemote } from "./remote-sync-command.ts";

const ACTIONS = ["list", "remove"] as const;

export function registerKnownHostsCommand(cli: CAC, setRun: (run: () => Promise<void>) => void): void {
  cli.command("known-hosts <action> [host]", "List the pinned host keys (list), or forget a host's pin (remove HOST[:PORT])")
    .option("--known-hosts <file>", "Pinned host keys (default: <config>/known_hosts)")
    .example("  ssync known-hosts list")
    .example("  ssync known-hosts remove backup:7070   # its key was replaced: the next push pins the new one")
    .action((action: string, host: string | undefined, flags: { knownHosts?: string }) => {
      setRun(async () => {
        const file = flags.knownHosts ?? join(configDir(), "known_hosts");
        if (!(ACTIONS as readonly string[]).includes(action)) {
          throw new UsageError(`Unknown action known-hosts ${action} (use list or remove HOST[:PORT])${didYouMean(action, ACTIONS)}`);
        }
        if (action === "list") {
          if (host !== undefined) throw new UsageError(`known-hosts list takes no host (got ${host})`);
          const warn = (m: string) => console.error(`ssync: warning: ${m}`);
          for (const e of await listKnownHosts(file, { warn })) {
            console.log(`${e.name} ${fingerprint(e.publicKey)}${e.comment ? " " + e.comment : ""}`);
          }
          return;
        }
        if (host === undefined) throw new UsageError("known-hosts remove needs HOST[:PORT], e.g. ssync known-hosts remove backup:7070");
        const given = parseRemote(host);
        if (given.path !== undefined) throw new UsageError(`Invalid host ${host}: give HOST[:PORT], no path`);
        const target = resolveHost(await loadConfig(), { host: given.host, explicitPort: given.port, defaultPort: DEFAULT_PORT });
        const name = knownHostName(target);
        const removed = await removeKnownHost(file, target);
        console.log(
          removed.length === 0
            ? `${name} is not pinned in ${file}: nothing removed`
            : `Removed ${name} from ${file} (line ${removed.join(", ")}): the next connection shows its key as unknown`,
        );
      });
    });
}
