/**
 * Errors from storage read "Cannot <action> <path>: <reason in plain words>" and keep the
 * errno name in `.code` (e.g. "ENOENT") and the original error in `.cause`.
 */
import { errnoName } from "../platform/libc.ts";
import { ErrnoError } from "../util/errors.ts";

/** Already worded for the user: storage passes it on unchanged. */
export class StorageError extends ErrnoError {
  override name = "StorageError";
  /** The path as the store names it in messages. */
  readonly path: string;
  constructor(code: string, message: string, options: { path: string; cause?: unknown }) {
    super(code, message, { cause: options.cause });
    this.path = options.path;
  }
}

const REASONS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  ENOTDIR: "a component of the path is not a directory",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EROFS: "read-only file system",
  EIO: "input/output error",
  EBUSY: "device or resource busy",
  EFBIG: "file too large",
  ELOOP: "too many levels of symbolic links",
  ENAMETOOLONG: "file name too long",
  EMFILE: "too many open files",
  ENFILE: "too many open files in system",
  ENXIO: "no such device",
  ENODEV: "no such device",
  ETXTBSY: "text file busy",
  EINVAL: "invalid argument",
  EOPNOTSUPP: "operation not supported",
  ENOTSUP: "operation not supported",
  ENOTTY: "inappropriate ioctl for device",
  EBADF: "file is not open",
  EAGAIN: "resource temporarily unavailable",
  EWOULDBLOCK: "resource temporarily unavailable",
  ENOMEM: "out of memory",
  EOVERFLOW: "value too large",
};

/**
 * Deno reports some failures (ftruncate past the filesystem's limit) with no `code`, only a
 * message ending "(os error 27)": the errno name is recovered from that number.
 */
function osErrorName(message: unknown): string | undefined {
  const m = typeof message === "string" ? /\(os error (\d+)\)$/.exec(message) : null;
  return m ? errnoName(Number(m[1])) : undefined;
}

/** Plain words for an errno name, falling back to the name itself. */
export function errnoReason(code: string): string {
  return REASONS[code] ?? code;
}

/**
 * "Cannot <action> <path>: <reason>" from an errno name, a negative errno number returned by
 * libc, or a caught Error (whose `.code` is used when present).
 */
export function storageError(
  action: string,
  path: string,
  options: {
    cause?: unknown;
    code?: string;
    errno?: number;
    reason?: string;
    /** The whole message, when "Cannot <action> <path>: <reason>" does not fit. */
    message?: string;
  },
): StorageError {
  const cause = options.cause as { code?: unknown; message?: unknown; name?: unknown } | undefined;
  const known = options.code ??
    (options.errno !== undefined ? errnoName(options.errno) : undefined) ??
    (typeof cause?.code === "string" ? cause.code : undefined) ??
    osErrorName(cause?.message);
  // Deno refuses with NotCapable (no errno) when its permissions do not allow the access.
  const code = known ?? (cause?.name === "NotCapable" ? "EACCES" : "EIO");
  const reason = options.reason ?? (known && REASONS[known]) ??
    (typeof cause?.message === "string" ? cause.message : errnoReason(code));
  const message = options.message ?? `Cannot ${action} ${path}: ${reason}`;
  return new StorageError(code, message, { path, cause: options.cause });
}
