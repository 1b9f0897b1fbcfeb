/** `ssync pull HOST[:PORT]:REMOTE LOCAL`: make LOCAL identical to the listener's REMOTE. */
import type { CAC } from "cac";
import { DEFAULT_PORT } from "../net/host-port.ts";
import { UsageError } from "../util/errors.ts";
import { isRemoteFolderSync, type RemoteFolderFlags, runRemoteFolderSync, withFolderOptions } from "./remote-folder-command.ts";
import { checkLocal, parseRemote, REMOTE_HELP, runRemoteSync, withRemoteOptions } from "./remote-sync-command.ts";
import { printFolderSummary } from "./sync-folder-command.ts";

export function registerPullCommand(cli: CAC, setRun: (run: (signal?: AbortSignal) => Promise<void>) => void, argv: readonly string[] = []): void {
  withFolderOptions(withRemoteOptions(
    cli.command("pull <remote> <local>", "Make LOCAL identical to REMOTE (HOST[:PORT]:PATH; a folder as HOST:DIR/ DIR/)")
      .usage(`pull <remote> <local>\n\n  Make LOCAL identical to REMOTE, which names a file, or a folder (both names ending with /).\n  ${REMOTE_HELP}`),
  )).example("  ssync pull backup:7070:vm.img vm.img      # repair or restore a local copy")
    .example("  ssync pull --verify backup:vm.img vm.img  # backup: a host alias of <config>/config")
    .example("  ssync pull backup:images/ /restore/images/ # a folder, one connection")
    .action((remote: string, local: string, flags: RemoteFolderFlags) => {
    setRun(async (signal) => {
      checkLocal(local, { other: "push", remote });
      const endpoint = parseRemote(remote);
      if (isRemoteFolderSync("pull", local, endpoint.path, flags)) {
        const { summary, failure } = await runRemoteFolderSync("pull", { local, remote: { ...endpoint, path: endpoint.path! }, flags, signal, argv });
        printFolderSummary(summary, flags);
        if (failure) throw failure;
        return;
      }
      if (endpoint.path === undefined) {
        throw new UsageError(`Invalid remote ${remote}: name the file, as HOST:PORT:PATH or HOST:PATH (default port ${DEFAULT_PORT})`);
      }
      await runRemoteSync("pull", { local, remote: { ...endpoint, path: endpoint.path }, flags, signal });
    });
  });
}
