/**
 * Air-gapped updates (spec §9): `ssync signature`, `ssync diff`, `ssync apply`.
 *
 * Keys (README "Air-gapped updates"):
 * - signature: the key updates are sealed to is --key FILE (private or .pub), else the
 *   listener's host key <config>/host_key when there is one, else the user's identity
 *   <config>/id_ssync;
 * - diff: the sender is --key FILE, else <config>/id_ssync; the signature's host key must be
 *   the one --to names (a fingerprint) or pinned for some host in <config>/known_hosts: a
 *   signature swapped in transit would otherwise have the update sealed to its forger;
 * - apply: the recipient is --key FILE, else whichever of <config>/host_key and
 *   <config>/id_ssync the update is sealed to; the sender must be listed, without read-only
 *   and without path=, in --authorized-keys FILE, else <config>/authorized_keys (the
 *   listener's default file).
 * Every refusal about keys is an AuthenticationError (exit 5), checked on the clear header
 * before anything is decrypted.
 */
import fs from "node:fs";
import { join } from "node:path";
import type { CAC } from "cac";
import { decodeUpdateHeader, encodeUpdateHeader, OfflineFormatError, UPDATE_HEADER_SIZE } from "../../protocol/offline-format.ts";
import { WorkerPool } from "../engine/worker-pool.ts";
import { ChunkOpener, ChunkSealer, ephemeralKeyPair, recipientKey, senderKey } from "../noise/sealed-stream.ts";
import type { KeyPair } from "../noise/x25519.ts";
import { applyUpdate, type ApplyReport } from "../session/offline-apply.ts";
import { SignatureReader, writeUpdate, type DiffReport } from "../session/offline-diff.ts";
import { writeSignature, type SignatureReport } from "../session/offline-signature.ts";
import { RecordReader, SealedReader, SealedWriter } from "../session/offline-stream.ts";
import { SequentialReader, SequentialWriter } from "../storage/offline-file.ts";
import { openSource } from "../storage/open-source.ts";
import { findAuthorizedKey, readAuthorizedKeys } from "../trust/authorized-keys.ts";
import { configDir } from "../trust/config-dir.ts";
import { fingerprint, readAnyKey, readPrivateKey } from "../trust/keys.ts";
import { parseKnownHosts } from "../trust/known-hosts.ts";
import { readTrustFile } from "../trust/trust-file.ts";
import { equalBytes } from "../util/equal-bytes.ts";
import { AuthenticationError, UsageError } from "../util/errors.ts";
import { formatBytes } from "../util/format-bytes.ts";
import { kebabBooleans, parseBlockSize, parseHash, parseWait } from "./engine-options.ts";
import { DEFAULT_CLIENT_KEY } from "./keygen-command.ts";
import { HOST_KEY_FILE } from "./listen-command.ts";
import { SUMMARY_SCHEMA } from "./summary.ts";

interface OutputFlags {
  json?: boolean;
  quiet?: boolean;
}

/** The commands here run under main's Interrupt: Ctrl-C aborts them through `signal`. */
export const OFFLINE_COMMANDS = ["signature", "diff", "apply"];

export function registerOfflineCommands(cli: CAC, setRun: (run: (signal?: AbortSignal) => Promise<void>) => void): void {
  cli.command("signature <dst>", "Air gap, on the destination: write DST's block digests (-o FILE) for `ssync diff` on the source machine")
    .option("-o, --output <file>", "The signature file to write (mode 0600)")
    .option("--key <file>", `The key updates are sealed to (default: <config>/${HOST_KEY_FILE} if it exists, else <config>/${DEFAULT_CLIENT_KEY})`)
    .option("--block-size <size>", "Block size, 4K…1M (default 64K)")
    .option("--hash <name>", "poly1305 (default), hmac-sha256, blake3, xxh128 (trusted data only)")
    .option("--json", "One JSON object on stdout")
    .option("-q, --quiet", "Print nothing but errors")
    .example("  ssync signature /srv/images/vm.img -o /media/usb/vm.sig")
    .action((dst: string, flags: OutputFlags & { output?: string; key?: string; blockSize?: string; hash?: string }) => {
      setRun(async (signal) => print(await signatureCommand(dst, flags, signal ?? new AbortController().signal), flags));
    });
  kebabBooleans(cli.command("diff <src> <signature>", "Air gap, on the source: seal the blocks of SRC that differ from the signature (-o FILE) for `ssync apply`")
    .option("-o, --output <file>", "The update file to write (mode 0600)")
    .option("--key <file>", `Our private key, which signs the update (default: <config>/${DEFAULT_CLIENT_KEY})`)
    .option("--to <fingerprint>", "The destination's key, as `ssync keygen -l` prints it there (needed unless known_hosts pins that key)")
    .option("--known-hosts <file>", "Where a pinned destination key is looked for (default: <config>/known_hosts)")
    .option("--allow-shrink", "Let the update cut data past SRC's end off the destination")
    .option("--json", "One JSON object on stdout")
    .option("-q, --quiet", "Print nothing but errors"))
    .example("  ssync diff vm.img /media/usb/vm.sig -o /media/usb/vm.update --to SHA256:…")
    .action((src: string, sig: string, flags: OutputFlags & { output?: string; key?: string; to?: string; knownHosts?: string; allowShrink?: boolean }) => {
      setRun(async (signal) => print(await diffCommand(src, sig, flags, signal ?? new AbortController().signal), flags));
    });
  kebabBooleans(cli.command("apply <update> <dst>", "Air gap, on the destination: check and apply a sealed update to DST, crash-safely")
    .option("--key <file>", `Our private key (default: whichever of <config>/${HOST_KEY_FILE} and <config>/${DEFAULT_CLIENT_KEY} the update is sealed to)`)
    .option("--authorized-keys <file>", "Senders allowed (default: <config>/authorized_keys)")
    .option("-n, --dry-run", "Check everything and say what would change; change nothing")
    .option("--wait <seconds>", "When another ssync is writing DST, wait this long for it (default 5)")
    .option("--json", "One JSON object on stdout")
    .option("-q, --quiet", "Print nothing but errors"))
    .example("  ssync apply /media/usb/vm.update /srv/images/vm.img")
    .example("  ssync apply -n --json /media/usb/vm.update /srv/images/vm.img")
    .action((update: string, dst: string, flags: OutputFlags & { key?: string; authorizedKeys?: string; dryRun?: boolean; wait?: string }) => {
      setRun(async (signal) => print(await applyCommand(update, dst, flags, signal ?? new AbortController().signal), flags));
    });
}

type Outcome =
  | { text: string; json: Record<string, unknown> };

function print(o: Outcome, flags: OutputFlags): void {
  if (flags.json) console.log(JSON.stringify({ schema: SUMMARY_SCHEMA, ok: true, exitCode: 0, ...o.json }));
  else if (!flags.quiet) console.log(o.text);
}

function output(flags: { output?: string }, command: string): string {
  if (typeof flags.output !== "string" || flags.output === "") throw new UsageError(`ssync ${command} needs -o FILE: where to write it`);
  return flags.output;
}

/** signature: --key, else the host key when there is one, else the user's identity. */
async function sealedToKey(file: string | undefined): Promise<{ publicKey: Uint8Array; file: string }> {
  if (file !== undefined) return { publicKey: (await readAnyKey(file)).publicKey, file };
  for (const name of [HOST_KEY_FILE, DEFAULT_CLIENT_KEY]) {
    const path = join(configDir(), name);
    if (fs.existsSync(path)) return { publicKey: (await readAnyKey(path)).publicKey, file: path };
  }
  throw new UsageError(`No key to seal updates to: give --key FILE, or make one with ssync keygen (looked for ${join(configDir(), HOST_KEY_FILE)} and ${join(configDir(), DEFAULT_CLIENT_KEY)})`);
}

async function signatureCommand(dst: string, flags: { output?: string; key?: string; blockSize?: string; hash?: string }, signal: AbortSignal): Promise<Outcome> {
  const out = output(flags, "signature");
  const blockSize = parseBlockSize(flags.blockSize);
  const hash = parseHash(flags.hash);
  const key = await sealedToKey(flags.key);
  const store = await openSource(dst);
  const pool = new WorkerPool();
  try {
    const writer = SequentialWriter.create(out);
    try {
      const r: SignatureReport = await writeSignature(store, writer, { pool, blockSize, hash, hostKey: key.publicKey, signal });
      await writer.commit();
      const fp = fingerprint(key.publicKey);
      return {
        text: `signature of ${dst}: ${formatBytes(r.size)}, ${r.blocks} blocks of ${formatBytes(blockSize)} (${r.dataBlocks} with data), ` +
          `read ${formatBytes(r.bytesRead)}, holes ${formatBytes(r.holeBytesSkipped)} skipped, ${r.seconds.toFixed(1)} s\n` +
          `wrote ${out} (${formatBytes(r.signatureBytes)}; keep it private: it holds the hash key); updates are to be sealed to ${fp} (${key.file})`,
        json: { mode: "signature", destination: dst, output: out, hostKey: fp, keyFile: key.file, ...r },
      };
    } finally {
      await writer[Symbol.asyncDispose]();
    }
  } finally {
    await pool[Symbol.asyncDispose]();
    await store[Symbol.asyncDispose]();
  }
}

/** diff: the signature's host key must be the one --to names, or pinned in known_hosts. */
async function checkRecipient(hostKey: Uint8Array, flags: { to?: string; knownHosts?: string }, sig: string): Promise<string> {
  const fp = fingerprint(hostKey);
  if (flags.to !== undefined) {
    if (String(flags.to) !== fp) {
      throw new AuthenticationError(`Cannot seal an update for ${sig}: it names the destination key ${fp}, not ${flags.to} (--to); the signature is not the one you expect`);
    }
    return "--to";
  }
  const file = flags.knownHosts ?? join(configDir(), "known_hosts");
  const text = await readTrustFile(file, { what: "known hosts" });
  const pinned = text === null ? [] : parseKnownHosts(text, { file, warn: (m) => console.error(`ssync: warning: ${m}`) }).entries.filter((e) => equalBytes(e.publicKey, hostKey));
  if (pinned.length === 0) {
    throw new AuthenticationError(
      `Cannot seal an update for ${sig}: its destination key ${fp} is not pinned in ${file}; ` +
        `check it on the destination (ssync keygen -l <key file>) and give --to ${fp}`,
    );
  }
  return `known_hosts (${pinned.map((e) => e.name).join(", ")})`;
}

async function senderIdentity(file: string | undefined): Promise<KeyPair> {
  const path = file ?? join(configDir(), DEFAULT_CLIENT_KEY);
  if (file === undefined && !fs.existsSync(path)) throw new UsageError(`No key: run ssync keygen (looked for ${path})`);
  return await readPrivateKey(path);
}

async function diffCommand(
  src: string,
  sigPath: string,
  flags: { output?: string; key?: string; to?: string; knownHosts?: string; allowShrink?: boolean },
  signal: AbortSignal,
): Promise<Outcome> {
  const out = output(flags, "diff");
  const sender = await senderIdentity(flags.key);
  const input = SequentialReader.open(sigPath);
  try {
    return await diffFrom(input, src, sigPath, { out, sender, flags, signal });
  } catch (e) {
    throw e instanceof OfflineFormatError ? new OfflineFormatError(`Cannot read signature ${sigPath}: ${e.message}; no update was written`, { cause: e }) : e;
  } finally {
    await input[Symbol.asyncDispose]();
  }
}

async function diffFrom(
  input: SequentialReader,
  src: string,
  sigPath: string,
  o: { out: string; sender: KeyPair; flags: { to?: string; knownHosts?: string; allowShrink?: boolean }; signal: AbortSignal },
): Promise<Outcome> {
  const { out, sender, flags, signal } = o;
  const sig = await SignatureReader.open(input);
  const trustedBy = await checkRecipient(sig.header.hostKey, flags, sigPath);
  const ephemeral = ephemeralKeyPair();
  const header = encodeUpdateHeader({ recipient: sig.header.hostKey, sender: sender.publicKey, ephemeral: ephemeral.publicKey });
  const sealer = new ChunkSealer(senderKey({ header, sender, ephemeral, recipient: sig.header.hostKey }));
  const store = await openSource(src);
  const pool = new WorkerPool();
  try {
    const writer = SequentialWriter.create(out);
    try {
      await writer.write(header);
      const r: DiffReport = await writeUpdate(store, sig, new SealedWriter(writer, sealer), {
        pool,
        allowShrink: flags.allowShrink === true,
        signal,
        updateBytes: () => writer.bytes,
      });
      await writer.commit();
      const to = fingerprint(sig.header.hostKey);
      return {
        text: `update of ${src} against ${sigPath}: ${r.blocksSent} blocks differ (${formatBytes(r.bytesSent)}, ${formatBytes(r.dataBytesInUpdate)} in the update), ` +
          `${formatBytes(r.bytesZeroed)} become holes, size ${sizeChange(r.sizeBefore, r.sizeAfter)}; read ${formatBytes(r.bytesRead)}, ${r.seconds.toFixed(1)} s\n` +
          `wrote ${out} (${formatBytes(r.updateBytes)}), sealed to ${to} (trusted by ${trustedBy}) from ${fingerprint(sender.publicKey)}`,
        json: { mode: "diff", source: src, signature: sigPath, output: out, recipient: to, sender: fingerprint(sender.publicKey), ...r },
      };
    } finally {
      await writer[Symbol.asyncDispose]();
    }
  } finally {
    await pool[Symbol.asyncDispose]();
    await store[Symbol.asyncDispose]();
  }
}

function sizeChange(before: number, after: number): string {
  if (before === after) return `unchanged (${formatBytes(after)})`;
  return `${after > before ? "grows" : "shrinks"} from ${formatBytes(before)} to ${formatBytes(after)}`;
}

/** apply: the private key the update is sealed to, among --key or the host key and the identity. */
async function recipientIdentity(recipient: Uint8Array, file: string | undefined, update: string): Promise<{ key: KeyPair; file: string }> {
  const candidates = file !== undefined ? [file] : [HOST_KEY_FILE, DEFAULT_CLIENT_KEY].map((n) => join(configDir(), n)).filter((p) => fs.existsSync(p));
  const seen: string[] = [];
  for (const path of candidates) {
    const key = await readPrivateKey(path);
    if (equalBytes(key.publicKey, recipient)) return { key, file: path };
    seen.push(`${path} is ${fingerprint(key.publicKey)}`);
  }
  throw new AuthenticationError(
    `Cannot apply ${update}: it is sealed for ${fingerprint(recipient)}, not for this machine's key (${seen.length > 0 ? seen.join(", ") : "no key found"}); ` +
      `give --key with the key its signature was made with`,
  );
}

async function applyCommand(update: string, dst: string, flags: { key?: string; authorizedKeys?: string; dryRun?: boolean; wait?: string }, signal: AbortSignal): Promise<Outcome> {
  const lockWaitMs = parseWait(flags.wait);
  const input = SequentialReader.open(update);
  try {
    return await applyFrom(input, update, dst, { flags, lockWaitMs, signal });
  } catch (e) {
    throw e instanceof OfflineFormatError ? new OfflineFormatError(`Cannot apply ${update}: ${e.message}; ${dst} is unchanged`, { cause: e }) : e;
  } finally {
    await input[Symbol.asyncDispose]();
  }
}

async function applyFrom(
  input: SequentialReader,
  update: string,
  dst: string,
  o: { flags: { key?: string; authorizedKeys?: string; dryRun?: boolean }; lockWaitMs: number; signal: AbortSignal },
): Promise<Outcome> {
  const { flags, lockWaitMs, signal } = o;
  const clear = await input.need(UPDATE_HEADER_SIZE, "its header");
  const header = decodeUpdateHeader(clear);
  const me = await recipientIdentity(header.recipient, flags.key, update);
  const file = flags.authorizedKeys ?? join(configDir(), "authorized_keys");
  const keys = await readAuthorizedKeys(file, { warn: (m) => console.error(`ssync: warning: ${m}`) });
  const who = fingerprint(header.sender);
  const entry = findAuthorizedKey(keys, header.sender);
  if (!entry) throw new AuthenticationError(`Cannot apply ${update}: its sender ${who} is not in ${file}`);
  if (entry.readOnly) throw new AuthenticationError(`Cannot apply ${update}: its sender ${who} is read-only in ${file}`);
  if (entry.pathPrefix !== null) {
    throw new AuthenticationError(
      `Cannot apply ${update}: its sender ${who} is limited to path=${entry.pathPrefix} in ${file}, and a local path cannot be confined to a listener's root; ` +
        `list the key without path= in a file of its own and give --authorized-keys`,
    );
  }
  const opener = new ChunkOpener(recipientKey({ header: clear, recipient: me.key, sender: header.sender, ephemeral: header.ephemeral }));
  const records = new RecordReader(new SealedReader(input, opener));
  const pool = new WorkerPool();
  try {
    const r: ApplyReport = await applyUpdate(records, dst, { pool, dryRun: flags.dryRun === true, lockWaitMs, log: (m) => console.error(`ssync: ${m}`), signal });
    const what = `${r.blocksChanged} blocks (${formatBytes(r.bytesChanged)}) written, ${formatBytes(r.bytesZeroed)} made holes, size ${sizeChange(r.sizeBefore, r.sizeAfter)}`;
    const text = r.alreadyApplied
      ? `${dst} is already the update's result: nothing to do (checked: root after matches; read ${formatBytes(r.bytesRead)})`
      : `${r.dryRun ? "would apply" : "applied"} ${update} to ${dst} from ${who}: ${what}; read ${formatBytes(r.bytesRead)}, root before and after checked, ${r.seconds.toFixed(1)} s`;
    return {
      text,
      json: { mode: "apply", update, sender: who, recipient: fingerprint(header.recipient), keyFile: me.file, changed: !r.dryRun && !r.alreadyApplied, ...r },
    };
  } finally {
    await pool[Symbol.asyncDispose]();
  }
}
