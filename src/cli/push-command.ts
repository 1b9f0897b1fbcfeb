/** `ssync push LOCAL HOST[:PORT][:REMOTE]`: make the listener's REMOTE identical to LOCAL. */
import { basename } from "node:path";
import type { CAC } from "cac";
import { defaultRemoteFolder, isRemoteFolderSync, type RemoteFolderFlags, runRemoteFolderSync, withFolderOptions } from "./remote-folder-command.ts";
import { checkLocal, parseRemote, REMOTE_HELP, runRemoteSync, withRemoteOptions } from "./remote-sync-command.ts";
import { printFolderSummary } from "./sync-folder-command.ts";
import { printFanOutSummary, runFanOut } from "./fan-out-command.ts";

export function registerPushCommand(cli: CAC, setRun: (run: (signal?: AbortSignal) => Promise<void>) => void, argv: readonly string[] = []): void {
  withFolderOptions(withRemoteOptions(
    cli.command(
      "push <local> <remote> [...more]",
      "Make REMOTE (HOST[:PORT][:PATH], PATH defaults to LOCAL's name) identical to LOCAL (a file, or a folder as DIR/); several REMOTEs: one read of LOCAL for all",
    )
      .usage(
        `push <local> <remote> [remote...]\n\n  Make REMOTE identical to LOCAL; PATH defaults to LOCAL's name.\n  Several REMOTEs (a file only): LOCAL is read once for all of them; each gets its own\n  differing blocks, and one failing does not stop the others.\n  ${REMOTE_HELP}`,
      ),
  )).example("  ssync push vm.img backup:7070              # -> vm.img under the listener's root")
    .example("  ssync push vm.img backup:                  # backup: a host alias of <config>/config")
    .example("  ssync push --pair CODE vm.img 192.168.1.20:7070:vms/vm.img")
    .example("  ssync push -n --json /dev/vg0/vm backup:vm # what would change, as JSON")
    .example("  ssync push --delete /var/lib/libvirt/images/ backup:images/   # a folder, one connection")
    .example("  ssync push vm.img backupA: backupB:7070:vms/vm.img   # one read, two destinations")
    .action((local: string, remote: string, more: string[], flags: RemoteFolderFlags) => {
      setRun(async (signal) => {
        if (more.length > 0) {
          const { summary, failure } = await runFanOut(local, [remote, ...more], { flags, signal });
          printFanOutSummary(summary, flags);
          if (failure) throw failure;
          return;
        }
        checkLocal(local, { other: "pull", remote });
        const endpoint = parseRemote(remote);
        if (isRemoteFolderSync("push", local, endpoint.path, flags)) {
          const path = endpoint.path ?? defaultRemoteFolder(local);
          const { summary, failure } = await runRemoteFolderSync("push", { local, remote: { ...endpoint, path }, flags, signal, argv });
          printFolderSummary(summary, flags);
          if (failure) throw failure;
          return;
        }
        const path = endpoint.path ?? basename(local);
        await runRemoteSync("push", { local, remote: { ...endpoint, path }, flags, signal });
      });
    });
}
