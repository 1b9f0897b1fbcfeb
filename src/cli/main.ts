/**
 * The ssync command line: parses, runs one command, maps the outcome to an exit code. The
 * client commands (sync, push, pull) run under an Interrupt: SIGINT or SIGTERM aborts them
 * through their session's one abort path, and they exit 4 (interrupt.ts).
 *
 * 1. parse (cac); an unknown command or option is a usage error naming the nearest one;
 * 2. run the command;
 * 3. report a failure: one line on stderr and, under --json, one JSON object on stdout
 *    (exit-code.ts errorObject), so that every outcome of a --json run is one object there.
 */
import process from "node:process";
import { cac } from "cac";
import { MAX_TREE_ENTRIES } from "../storage/tree-entry.ts";
import { configDir } from "../trust/config-dir.ts";
import { FilesFailedError, UsageError } from "../util/errors.ts";
import { configuredFlags, loadConfig } from "./config-file.ts";
import { didYouMean } from "./did-you-mean.ts";
import { withEngineOptions } from "./engine-options.ts";
import { describeError, errorObject, EXIT_CODES, EXIT_OK, exitCodeOf } from "./exit-code.ts";
import { Interrupt } from "./interrupt.ts";
import { attachProgressValue } from "./progress-mode.ts";
import { checkLocalNames, printSummary, runSyncCommand } from "./sync-command.ts";
import { type FolderFlags, isFolderSync, printFolderSummary, runFolderSyncCommand } from "./sync-folder-command.ts";
import { registerKeygenCommand } from "./keygen-command.ts";
import { registerKnownHostsCommand } from "./known-hosts-command.ts";
import { registerListenCommand } from "./listen-command.ts";
import { OFFLINE_COMMANDS, registerOfflineCommands } from "./offline-commands.ts";
import { registerPushCommand } from "./push-command.ts";
import { registerPullCommand } from "./pull-command.ts";
import { registerRecoverCommand } from "./recover-command.ts";
import { versionText } from "./version.ts";

/** The commands that sync, and so run under an Interrupt. */
const CLIENT_COMMANDS = new Set(["sync", "push", "pull", ...OFFLINE_COMMANDS]);

export async function main(argv: string[]): Promise<number> {
  const cli = cac("ssync");
  let run: ((signal?: AbortSignal) => Promise<void>) | undefined;
  let interrupt: Interrupt | undefined;
  let code = EXIT_OK;
  const json = wantsJson(argv);
  const report = (error: unknown) => {
    console.error(`ssync: ${describeError(error)}`);
    // A folder sync's summary, printed already, is its one object (it lists each failure).
    if (json && !(error instanceof FilesFailedError)) console.log(JSON.stringify(errorObject(error)));
  };

  withEngineOptions(
    cli.command("sync <src> <dst>", "Make DST byte-identical to SRC on this machine (files or block devices; folders as SRC/ DST/)"),
  ).option("--include <glob>", "Folder sync: keep the paths it matches (repeatable; with --exclude, the first matching rule wins, as rsync; see README)")
    .option("--exclude <glob>", "Folder sync: leave out the paths it matches, relative to SRC/; an excluded folder is not entered (repeatable; `*.tmp`, `cache/`, `vms/**`)")
    .option("--delete", "Folder sync: remove what DST/ holds and SRC/ does not (not excluded paths), only if no file failed; with -n, list it")
    .option("--checksum", "Folder sync: compare every file, even those whose size and mtime match (no quick check)")
    .example("  ssync sync vm.img /backup/vm.img        # first copy and incremental sync alike")
    .example("  ssync sync --delete /var/lib/libvirt/images/ /mnt/backup/images/   # a folder: both names end with /")
    .example(`  (a folder sync lists at most ${MAX_TREE_ENTRIES} entries a side; links are never followed on either side)`)
    .example("  ssync sync -n --json vm.img /backup/vm.img")
    .example("  ssync sync --verify /dev/vg0/vm /dev/vg1/vm-copy")
    .action((src: string, dst: string, flags: FolderFlags) => {
      run = async (signal) => {
        const configured = configuredFlags("sync", flags, await loadConfig()) as FolderFlags;
        checkLocalNames(src, dst);
        if (!isFolderSync(src, dst, configured)) {
          printSummary(await runSyncCommand(src, dst, configured, { signal }), configured);
          return;
        }
        const { summary, failure } = await runFolderSyncCommand(src, dst, configured, { signal, argv });
        printFolderSummary(summary, configured);
        if (failure) throw failure;
      };
    });

  registerKeygenCommand(cli, (r) => (run = r));
  registerKnownHostsCommand(cli, (r) => (run = r));
  registerListenCommand(cli, (r) => (run = r));
  registerPushCommand(cli, (r) => (run = r), argv);
  registerPullCommand(cli, (r) => (run = r), argv);
  registerRecoverCommand(cli, (r) => (run = r));
  registerOfflineCommands(cli, (r) => (run = r));

  cli.help((sections) => helpSections(sections, CLIENT_COMMANDS.has(cli.matchedCommandName ?? "") || !cli.matchedCommand));
  cli.option("-V, --version", "Print the version, the runtime and the commit it was built from");
  try {
    try {
      cli.parse(["ssync", "ssync", ...attachProgressValue(argv)], { run: false });
      if (cli.options.help) return EXIT_OK;
      if (cli.options.version) {
        console.log(versionText());
        return EXIT_OK;
      }
      if (!cli.matchedCommand) throw unknownCommand(cli, argv);
      await cli.runMatchedCommand();
    } catch (e) {
      throw explainUnknownOption(e, cli, argv);
    }
    if (run && CLIENT_COMMANDS.has(cli.matchedCommandName ?? "")) interrupt = new Interrupt({ report });
    if (run) await run(interrupt?.signal);
  } catch (e) {
    const error = interrupt ? interrupt.outcome(e) : e;
    if (interrupt) interrupt.say(error);
    else report(error);
    code = exitCodeOf(error);
  }
  interrupt?.finished(code);
  return code;
}

/** --json before any "--": errors are then reported as a JSON object too. */
function wantsJson(argv: string[]): boolean {
  const end = argv.indexOf("--");
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === "--json" || a === "--json=true");
}

type Cli = ReturnType<typeof cac>;

/**
 * cac's "Unknown option `--blockSiz`" (camelCased) as the user typed it, with the nearest
 * option of that command; other errors unchanged.
 */
function explainUnknownOption(e: unknown, cli: Cli, argv: string[]): unknown {
  const m = (e as Error)?.name === "CACError" ? /^Unknown option `-{1,2}(.+)`$/.exec((e as Error).message) : null;
  if (m === null) return e;
  const end = argv.indexOf("--");
  const typed = (end < 0 ? argv : argv.slice(0, end))
    .filter((a) => a.startsWith("-"))
    .map((a) => a.replace(/=.*$/, ""))
    // mri reads --no-X as X=false: the name cac reports lacks the "no-".
    .find((a) => [a.replace(/^-+/, ""), a.replace(/^--no-/, "")].some((n) => camel(n) === m[1])) ?? `--${m[1]}`;
  const command = cli.matchedCommand!;
  const longNames = [...command.options, ...cli.globalCommand.options]
    .flatMap((o) => o.rawName.split(/[ ,]+/).filter((n) => n.startsWith("--")));
  const hint = didYouMean(typed, longNames);
  return new UsageError(`Unknown option ${typed} for ssync ${command.name} (see ssync ${command.name} --help)${hint}`);
}

/** No command matched: the first word is no command (or there is none, only options). */
function unknownCommand(cli: Cli, argv: string[]): UsageError {
  const word = argv.find((a) => !a.startsWith("-"));
  if (word !== undefined) {
    return new UsageError(`Unknown command ${word} (see ssync --help)${didYouMean(word, cli.commands.map((c) => c.name))}`);
  }
  const option = argv.find((a) => a.startsWith("-"));
  return new UsageError(option === undefined ? "No command given: see ssync --help" : `Unknown option ${option.replace(/=.*$/, "")} without a command: see ssync --help`);
}

function camel(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

interface HelpSection {
  title?: string;
  body: string;
}

/** Help as cac makes it, with the real config folder in place of <config>, and the exit codes. */
function helpSections(sections: HelpSection[], exitCodes: boolean): HelpSection[] {
  let folder: string;
  try {
    folder = configDir();
  } catch (e) {
    folder = `<config> (unknown: ${(e as Error).message})`;
  }
  // cac appends "(default: true)" to every --no-X option: noise, each says its default itself.
  const named = sections.map((s) => ({ ...s, body: s.body.replaceAll("<config>", folder).replaceAll(" (default: true)", "") }));
  named.push({
    title: "Config folder",
    body: `  ${folder} ($XDG_CONFIG_HOME/ssync, else ~/.config/ssync): keys, known_hosts, ` +
      `authorized_keys, and config (defaults and host aliases; see README)`,
  });
  if (exitCodes) named.push({ title: "Exit codes", body: EXIT_CODES.map(([n, what]) => `  ${n}  ${what}`).join("\n") });
  return named;
}

if (import.meta.main ?? process.argv[1]?.endsWith("main.ts")) {
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
