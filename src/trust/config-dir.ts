import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";

/**
 * ssync's configuration folder: $XDG_CONFIG_HOME/ssync when that is an absolute path
 * (the XDG spec says relative values are ignored), else ~/.config/ssync.
 * Holds: key (host/client private key), key.pub, known_hosts, authorized_keys.
 */
export function configDir(options: { env?: Record<string, string | undefined>; home?: string } = {}): string {
  const env = options.env ?? process.env;
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, "ssync");
  const home = options.home ?? env.HOME ?? homedir();
  if (!home) throw new Error("Cannot find the ssync config folder: neither XDG_CONFIG_HOME nor HOME is set");
  return join(home, ".config", "ssync");
}
