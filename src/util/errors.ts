/**
 * The error classes of ssync. Everything else is a built-in Error whose message says what
 * could not be done and why ("Cannot open vm.img: permission denied").
 *
 * - ErrnoError carries an errno-style name in `code` ("ENOENT", "EBUSY"…): the one way to
 *   say which ERROR code a failure becomes on the wire (errorName below).
 * - The others exist because src/cli/exit-code.ts maps them to exit codes, in one place.
 */
import { ErrorCode, type ErrorName } from "../../protocol/constants.ts";

/** A failure with an errno-style name, e.g. new ErrnoError("EROFS", "Cannot write x: …"). */
export class ErrnoError extends Error {
  override name = "ErrnoError";
  readonly code: string;
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** The command line was wrong. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The config file (cli/config-file.ts) is wrong: the message names its file and line. */
export class ConfigError extends UsageError {
  override name = "ConfigError";
}

/**
 * An identity the user must act on: an unknown or changed host key, a client key the
 * listener does not authorize, a wrong or used pairing code.
 */
export class AuthenticationError extends Error {
  override name = "AuthenticationError";
}

/** The peer answered a request with ERROR. */
export class RemoteError extends ErrnoError {
  override name = "RemoteError";
  constructor(code: ErrorName, message: string) {
    super(code, message);
  }
}

/** The destination does not match the source after a sync or a verify. */
export class MismatchError extends Error {
  override name = "MismatchError";
}

/**
 * The source changed while the sync read it (its size, mtime or ctime differ from when the
 * sync started), so what the destination received is no single image of it: the sync fails
 * before COMMIT. `code` ESTALE is what a pull source's ERROR carries.
 */
export class SourceChangedError extends ErrnoError {
  override name = "SourceChangedError";
  constructor(message: string, options?: ErrorOptions) {
    super("ESTALE", message, options);
  }

  /** The message for a change seen in `source`: `change` says what ("size 123 → 456", "modified"). */
  static detected(source: string, change: string): SourceChangedError {
    return new SourceChangedError(
      `Cannot sync ${source}: the source changed during the sync (${change}): snapshot the source or stop its writer, then rerun`,
    );
  }
}

/**
 * The connection to the peer was lost before the sync was committed: a rerun of the same
 * command completes it. Made only at the client's channel edge (net/incomplete-on-loss-channel.ts).
 */
export class IncompleteSyncError extends Error {
  override name = "IncompleteSyncError";
}

/**
 * The user stopped a client (SIGINT or SIGTERM, cli/interrupt.ts) before its sync was
 * committed: the session was aborted through its one abort path, so its stores were
 * disposed in order and a rerun of the same command completes it.
 */
export class InterruptedError extends Error {
  override name = "InterruptedError";
  /** The signal's name, e.g. "SIGINT". */
  readonly signal: string;
  constructor(signal: string) {
    super(`interrupted by ${signal}`);
    this.signal = signal;
  }
}

/**
 * Some files of a folder sync, or some destinations of a fan-out, failed (the others went on): the summary, printed already, lists
 * each; the exit code is the most serious of theirs (cli/exit-code.ts).
 */
export class FilesFailedError extends Error {
  override name = "FilesFailedError";
  /** Each failed file's error. */
  readonly errors: readonly unknown[];
  /** `noun`: what failed, "files" (a folder sync) or "destinations" (a fan-out). */
  constructor(errors: readonly unknown[], o: { files: number; noun?: "files" | "destinations" }) {
    super(`${errors.length} of ${o.files} ${o.noun ?? "files"} could not be synced (see above)`);
    this.errors = errors;
  }
}

/** The ERROR code for an error: its errno name when the protocol has it, else the nearest. */
export function errorName(e: unknown): ErrorName {
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "string" && Object.hasOwn(ErrorCode, code)) return code as ErrorName;
  if (code === "EOPNOTSUPP") return "ENOTSUP";
  if (code === "ENOTDIR" || code === "ELOOP") return "ENOENT";
  return "EIO";
}

/** `e` itself when it is an Error, else an Error saying what was thrown. */
export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
