/** `ssync push LOCAL HOST[:PORT][:REMOTE]`: make the listener's REMOTE identical to LOCAL. */
import { basename } from "node:path";
import type { CAC } from "cac";
import { checkLocal, parseRemote, REMOTE_HELP, type RemoteFlags, runRemoteSync, withRemoteOptions } from "./remote-sync-command.ts";

export function registerPushCommand(cli: CAC, setRun: (run: (signal?: AbortSignal) => Promise<void>) => void): void {
  withRemoteOptions(
    cli.command("push <local> <remote>", "Make REMOTE (HOST[:PORT][:PATH], PATH defaults to LOCAL's name) identical to LOCAL")
      .usage(`push <local> <remote>\n\n  Make REMOTE identical to LOCAL; PATH defaults to LOCAL's name.\n  ${REMOTE_HELP}`),
  ).example("  ssync push vm.img backup:7070              # -> vm.img under the listener's root")
    .example("  ssync push vm.img backup:                  # backup: a host alias of <config>/config")
    .example("  ssync push --pair CODE vm.img 192.168.1.20:7070:vms/vm.img")
    .example("  ssync push -n --json /dev/vg0/vm backup:vm # what would change, as JSON")
    .action((local: string, remote: string, flags: RemoteFlags) => {
      setRun(async (signal) => {
        checkLocal(local, { other: "pull", remote });
        const endpoint = parseRemote(remote);
        const path = endpoint.path ?? basename(local);
        await runRemoteSync("push", { local, remote: { ...endpoint, path }, flags, signal });
      });
    });
}
