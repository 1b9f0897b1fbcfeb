/**
 * The ssync command line: parses, runs one command, maps the outcome to an exit code. The
 * client commands (sync, push, pull) run under an Interrupt: SIGINT or SIGTERM aborts them
 * through their session's one abort path, and they exit 4 (interrupt.ts).
 */
import process from "node:process";
import { cac } from "cac";
import { UsageError } from "../util/errors.ts";
import { type EngineFlags, withEngineOptions } from "./engine-options.ts";
import { describeError, EXIT_OK, exitCodeOf } from "./exit-code.ts";
import { Interrupt } from "./interrupt.ts";
import { printSummary, runSyncCommand } from "./sync-command.ts";
import { registerKeygenCommand } from "./keygen-command.ts";
import { registerListenCommand } from "./listen-command.ts";
import { registerPushCommand } from "./push-command.ts";
import { registerPullCommand } from "./pull-command.ts";
import { registerRecoverCommand } from "./recover-command.ts";
import { versionText } from "./version.ts";

/** The commands that sync, and so run under an Interrupt. */
const CLIENT_COMMANDS = new Set(["sync", "push", "pull"]);

export async function main(argv: string[]): Promise<number> {
  const cli = cac("ssync");
  let run: ((signal?: AbortSignal) => Promise<void>) | undefined;
  let interrupt: Interrupt | undefined;
  let code = EXIT_OK;

  withEngineOptions(
    cli.command("sync <src> <dst>", "Make DST byte-identical to SRC on this machine (files or block devices)"),
  ).action((src: string, dst: string, flags: EngineFlags) => {
    run = async (signal) => printSummary(await runSyncCommand(src, dst, flags, { signal }), flags);
  });

  registerKeygenCommand(cli, (r) => (run = r));
  registerListenCommand(cli, (r) => (run = r));
  registerPushCommand(cli, (r) => (run = r));
  registerPullCommand(cli, (r) => (run = r));
  registerRecoverCommand(cli, (r) => (run = r));

  cli.help();
  cli.option("-V, --version", "Print the version, the runtime and the commit it was built from");
  try {
    cli.parse(["ssync", "ssync", ...argv], { run: false });
    if (cli.options.help) return EXIT_OK;
    if (cli.options.version) {
      console.log(versionText());
      return EXIT_OK;
    }
    if (!cli.matchedCommand) {
      throw new UsageError(argv.length ? `Unknown command ${argv[0]}: see ssync --help` : "No command given: see ssync --help");
    }
    await cli.runMatchedCommand();
    if (run && CLIENT_COMMANDS.has(cli.matchedCommandName ?? "")) interrupt = new Interrupt();
    if (run) await run(interrupt?.signal);
  } catch (e) {
    const error = interrupt ? interrupt.outcome(e) : e;
    const line = `ssync: ${describeError(error)}`;
    if (interrupt) interrupt.say(line);
    else console.error(line);
    code = exitCodeOf(error);
  }
  interrupt?.finished(code);
  return code;
}

if (import.meta.main ?? process.argv[1]?.endsWith("main.ts")) {
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
