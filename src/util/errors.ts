/**
 * Errors that callers catch by class. Everything else is a plain Error (or a Node-style
 * error with an errno `code`) whose message says what could not be done and why.
 * src/cli/exit-code.ts maps them to exit codes, in one place.
 */
import type { ErrorName } from "../../protocol/constants.ts";

/** The command line was wrong. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The peer answered a request with ERROR. */
export class RemoteError extends Error {
  override name = "RemoteError";
  readonly code: ErrorName;
  constructor(code: ErrorName, message: string) {
    super(message);
    this.code = code;
  }
}

/** The destination does not match the source after a sync or a verify. */
export class MismatchError extends Error {
  override name = "MismatchError";
}

/** The session ended before COMMIT_OK: the destination may be partly updated. */
export class IncompleteSyncError extends Error {
  override name = "IncompleteSyncError";
}

/** Errno-style code for an error, for ERROR replies. */
export function errorName(e: unknown): ErrorName {
  const code = (e as { code?: unknown })?.code;
  const known: readonly string[] = [
    "EPERM", "ENOENT", "EIO", "EACCES", "EBUSY", "EEXIST", "EISDIR", "EINVAL", "EFBIG", "ENOSPC", "EROFS",
    "EPROTO", "EBADMSG", "ENOTSUP",
  ];
  if (typeof code === "string" && known.includes(code)) return code as ErrorName;
  if (code === "EOPNOTSUPP") return "ENOTSUP";
  if (code === "ENOTDIR" || code === "ELOOP") return "ENOENT";
  return "EIO";
}

export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
