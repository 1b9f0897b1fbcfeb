/**
 * The only place that maps errors to exit codes and to the one line a user reads.
 *
 *   0  success            2  usage error (the command line or the config file)
 *   1  could not sync     3  destination does not match (root hash or --verify), or the
 *                           source changed during the sync (SourceChangedError)
 *   4  interrupted (SIGINT or SIGTERM, a lost connection, a broken peer) before the commit:
 *      the destination is still the old image (or a partial file a rerun resumes from);
 *      rerunning the same command completes it
 *   5  authentication: unknown or changed host key, key not authorized, pairing refused
 *
 * A folder sync in which some files failed (FilesFailedError) exits with the most serious of
 * its files' codes, in the order of FILE_CODE_ORDER: 3 (a file does not match or changed while
 * read) before 1 (could not sync) before 4 (interrupted: a rerun completes it).
 *
 * With --json, errorCodeOf() names the failure in one word that scripts can match on (stable:
 * a new code may be added, an existing one never changes meaning).
 */
import { ProtocolError } from "../../protocol/codec.ts";
import { OfflineFormatError } from "../../protocol/offline-format.ts";
import {
  AuthenticationError,
  ConfigError,
  ErrnoError,
  FilesFailedError,
  IncompleteSyncError,
  InterruptedError,
  MismatchError,
  RemoteError,
  SourceChangedError,
  UsageError,
} from "../util/errors.ts";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_MISMATCH = 3;
export const EXIT_INCOMPLETE = 4;
export const EXIT_AUTH = 5;

/** What an interrupted client tells the user, alone (a signal) or after the cause (a loss). */
export const INTERRUPTED_ADVICE = "interrupted: rerun the same command to complete it";

/** A folder sync's files' exit codes, most serious first. */
const FILE_CODE_ORDER = [EXIT_AUTH, EXIT_MISMATCH, EXIT_FAILED, EXIT_INCOMPLETE];

export function exitCodeOf(e: unknown): number {
  if (e instanceof FilesFailedError) {
    const codes = new Set(e.errors.map(exitCodeOf));
    return FILE_CODE_ORDER.find((c) => codes.has(c)) ?? EXIT_FAILED;
  }
  // cac throws CACError for an unknown option or a missing argument.
  if (e instanceof UsageError || (e as Error)?.name === "CACError") return EXIT_USAGE;
  if (e instanceof AuthenticationError) return EXIT_AUTH;
  if (e instanceof MismatchError) return EXIT_MISMATCH;
  if (e instanceof SourceChangedError) return EXIT_MISMATCH;
  if (e instanceof RemoteError && e.code === "EBADMSG") return EXIT_MISMATCH;
  if (e instanceof InterruptedError || e instanceof IncompleteSyncError || e instanceof ProtocolError) return EXIT_INCOMPLETE;
  return EXIT_FAILED;
}

/** The exit codes, for --help and README: code, meaning. */
export const EXIT_CODES: readonly [number, string][] = [
  [EXIT_OK, "success"],
  [EXIT_FAILED, "could not sync (or another command failed)"],
  [EXIT_USAGE, "usage: a bad command line or config file"],
  [EXIT_MISMATCH, "the destination does not match, or the source changed during the sync"],
  [EXIT_INCOMPLETE, "interrupted or connection lost before the commit: rerun to complete"],
  [EXIT_AUTH, "identity refused: unknown or changed host key, key not authorized"],
];

/** errno names and the error.code they become under --json; any other errno is "io". */
const ERRNO_CODES: Record<string, string> = {
  EBUSY: "busy",
  ENOENT: "not-found",
  ENOTDIR: "not-found",
  EACCES: "permission",
  EPERM: "permission",
  EROFS: "read-only",
  ENOSPC: "no-space",
  EDQUOT: "no-space",
  EFBIG: "too-large",
  ECONNREFUSED: "network",
  ECONNRESET: "network",
  ETIMEDOUT: "network",
  EHOSTUNREACH: "network",
  ENETUNREACH: "network",
  ENOTFOUND: "network",
  EAI_AGAIN: "network",
};

/**
 * The stable error.code of --json: usage, config, auth, mismatch, source-changed,
 * interrupted, connection-lost, protocol, corrupt (an offline file: damaged, forged,
 * truncated), busy, not-found, permission, read-only, no-space, too-large, network, io, failed,
 * files-failed (a folder sync: its summary lists each file's code). Consistent with exitCodeOf
 * (each code has one exit code).
 */
export function errorCodeOf(e: unknown): string {
  if (e instanceof FilesFailedError) return "files-failed";
  if (e instanceof ConfigError) return "config";
  if (e instanceof UsageError || (e as Error)?.name === "CACError") return "usage";
  if (e instanceof AuthenticationError) return "auth";
  if (e instanceof MismatchError) return "mismatch";
  if (e instanceof SourceChangedError) return "source-changed";
  if (e instanceof RemoteError && e.code === "EBADMSG") return "mismatch";
  if (e instanceof InterruptedError) return "interrupted";
  if (e instanceof IncompleteSyncError) return "connection-lost";
  if (e instanceof ProtocolError) return "protocol";
  if (e instanceof OfflineFormatError) return "corrupt";
  if (e instanceof ErrnoError) return ERRNO_CODES[e.code] ?? "io";
  return "failed";
}

/** The one JSON object of a failed command under --json. */
export function errorObject(e: unknown): { schema: 1; ok: false; error: { code: string; message: string; errno?: string; remote?: true }; exitCode: number } {
  const errno = e instanceof ErrnoError ? e.code : undefined;
  return {
    schema: 1,
    ok: false,
    error: {
      code: errorCodeOf(e),
      message: describeError(e),
      ...(errno === undefined ? {} : { errno }),
      ...(e instanceof RemoteError ? { remote: true as const } : {}),
    },
    exitCode: exitCodeOf(e),
  };
}

/** One line for stderr: what could not be done and why, plus what to do when it helps. */
export function describeError(e: unknown): string {
  const msg = printable(e instanceof Error ? e.message : String(e));
  if (e instanceof RemoteError) return `remote: ${msg}`;
  if (e instanceof InterruptedError) return INTERRUPTED_ADVICE;
  if (e instanceof IncompleteSyncError || e instanceof ProtocolError) return `${msg}: ${INTERRUPTED_ADVICE}`;
  return msg;
}

/** Control characters (a peer's text included) are shown escaped, never sent to the terminal. */
function printable(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) =>
    `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}
