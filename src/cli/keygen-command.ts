/**
 * `ssync keygen [-f FILE]`: a new identity key (FILE, mode 0600) and FILE.pub.
 * `ssync keygen -l FILE`: the fingerprint of a key file, private or public (as ssh-keygen -l).
 */
import os from "node:os";
import { join } from "node:path";
import type { CAC } from "cac";
import { configDir } from "../trust/config-dir.ts";
import { fingerprint, formatPublicKey, KEY_TYPE, readAnyKey, writePrivateKey } from "../trust/keys.ts";
import { generateKeyPair } from "../noise/x25519.ts";

export const DEFAULT_CLIENT_KEY = "id_ssync";

export function registerKeygenCommand(cli: CAC, setRun: (run: () => Promise<void>) => void): void {
  cli.command("keygen", "Make a key pair identifying this machine (private key FILE, public key FILE.pub)")
    .option("-f, --file <file>", `Private key file (default: ${join("<config>", DEFAULT_CLIENT_KEY)})`)
    .option("-l, --fingerprint <file>", "Print the fingerprint of a key file (private or public), make nothing")
    .example("  ssync keygen                     # <config>/id_ssync and id_ssync.pub")
    .example("  ssync keygen -f /etc/ssync/backup_key")
    .example("  ssync keygen -l <config>/host_key # the fingerprint a client pins (--host-key)")
    .action((flags: { file?: string; fingerprint?: string }) => {
      setRun(async () => {
        if (flags.fingerprint !== undefined) {
          const file = String(flags.fingerprint);
          const key = await readAnyKey(file);
          console.log(`${fingerprint(key.publicKey)} ${key.comment || file} (${KEY_TYPE}, ${key.kind} key)`);
          return;
        }
        const file = flags.file ?? join(configDir(), DEFAULT_CLIENT_KEY);
        const pair = generateKeyPair();
        const comment = `${safe(() => os.userInfo().username)}@${safe(() => os.hostname())}`;
        await writePrivateKey(file, pair, { comment });
        console.log(`Wrote private key ${file} and public key ${file}.pub`);
        console.log(formatPublicKey(pair.publicKey, { comment }));
        console.log(`fingerprint ${fingerprint(pair.publicKey)}`);
      });
    });
}

function safe(f: () => string): string {
  try {
    return f() || "ssync";
  } catch {
    return "ssync";
  }
}
