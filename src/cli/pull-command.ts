/** `ssync pull HOST[:PORT]:REMOTE LOCAL`: make LOCAL identical to the listener's REMOTE. */
import type { CAC } from "cac";
import { DEFAULT_PORT } from "../net/host-port.ts";
import { UsageError } from "../util/errors.ts";
import { checkLocal, parseRemote, REMOTE_HELP, type RemoteFlags, runRemoteSync, withRemoteOptions } from "./remote-sync-command.ts";

export function registerPullCommand(cli: CAC, setRun: (run: (signal?: AbortSignal) => Promise<void>) => void): void {
  withRemoteOptions(
    cli.command("pull <remote> <local>", "Make LOCAL identical to REMOTE (HOST[:PORT]:PATH)")
      .usage(`pull <remote> <local>\n\n  Make LOCAL identical to REMOTE, which must name a file.\n  ${REMOTE_HELP}`),
  ).example("  ssync pull backup:7070:vm.img vm.img      # repair or restore a local copy")
    .example("  ssync pull --verify backup:vm.img vm.img  # backup: a host alias of <config>/config")
    .action((remote: string, local: string, flags: RemoteFlags) => {
    setRun(async (signal) => {
      checkLocal(local, { other: "push", remote });
      const endpoint = parseRemote(remote);
      if (endpoint.path === undefined) {
        throw new UsageError(`Invalid remote ${remote}: name the file, as HOST:PORT:PATH or HOST:PATH (default port ${DEFAULT_PORT})`);
      }
      await runRemoteSync("pull", { local, remote: { ...endpoint, path: endpoint.path }, flags, signal });
    });
  });
}
