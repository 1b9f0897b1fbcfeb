/** `ssync pull HOST[:PORT]:REMOTE LOCAL`: make LOCAL identical to the listener's REMOTE. */
import type { CAC } from "cac";
import { UsageError } from "../util/errors.ts";
import { parseRemote, type RemoteFlags, runRemoteSync, withRemoteOptions } from "./remote-sync-command.ts";

export function registerPullCommand(cli: CAC, setRun: (run: (signal?: AbortSignal) => Promise<void>) => void): void {
  withRemoteOptions(
    cli.command("pull <remote> <local>", "Make LOCAL identical to REMOTE (HOST[:PORT]:PATH)"),
  ).example("  ssync pull backup:7070:vm.img vm.img      # repair or restore a local copy")
    .example("  ssync pull --verify backup:vm.img vm.img  # backup: a host alias of <config>/config")
    .action((remote: string, local: string, flags: RemoteFlags) => {
    setRun(async (signal) => {
      const endpoint = parseRemote(remote);
      if (endpoint.path === undefined) throw new UsageError(`Invalid remote ${remote}: name the file, as HOST[:PORT]:PATH`);
      await runRemoteSync("pull", { local, remote: { ...endpoint, path: endpoint.path }, flags, signal });
    });
  });
}
