/** `ssync pull HOST[:PORT]:REMOTE LOCAL`: make LOCAL identical to the listener's REMOTE. */
import type { CAC } from "cac";
import { parseEndpoint } from "../net/host-port.ts";
import { UsageError } from "../util/errors.ts";
import { type RemoteFlags, runRemoteSync, withRemoteOptions } from "./remote-sync-command.ts";

export function registerPullCommand(cli: CAC, setRun: (run: () => Promise<void>) => void): void {
  withRemoteOptions(
    cli.command("pull <remote> <local>", "Make LOCAL identical to REMOTE (HOST[:PORT]:PATH)"),
  ).action((remote: string, local: string, flags: RemoteFlags) => {
    setRun(async () => {
      let endpoint;
      try {
        endpoint = parseEndpoint(remote);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      if (endpoint.path === undefined) throw new UsageError(`Invalid remote ${remote}: name the file, as HOST[:PORT]:PATH`);
      await runRemoteSync("pull", { local, remote: { ...endpoint, path: endpoint.path }, flags });
    });
  });
}
