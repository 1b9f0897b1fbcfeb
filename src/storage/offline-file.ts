/**
 * The offline files (signature, sealed update) as byte streams: read front to back with a
 * bounded buffer, written to a work file beside the name and renamed over it once complete.
 *
 * Invariants:
 * - A reader never holds more than one request's bytes plus READ_BUFFER: `readExact(n)` is
 *   called only with n already checked against its limit by the format.
 * - A writer's file appears under its name only complete (fsynced, renamed, folder fsynced),
 *   mode 0600; disposed without `commit`, its work file is removed.
 */
import fs from "node:fs";
import nodePath from "node:path";
import { OfflineFormatError } from "../../protocol/offline-format.ts";
import { syncDirectory } from "./journaled-storage.ts";
import { storageError } from "./storage-error.ts";

const READ_BUFFER = 1 << 20;

export class SequentialReader implements AsyncDisposable {
  readonly path: string;
  readonly #fd: number;
  #position = 0;
  #buffer = new Uint8Array(0);
  #at = 0;
  #eof = false;
  /** Bytes handed out so far. */
  consumed = 0;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  static open(path: string): SequentialReader {
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY);
      if (!fs.fstatSync(fd).isFile()) {
        fs.closeSync(fd);
        throw Object.assign(new Error("not a regular file"), { code: "EINVAL" });
      }
    } catch (e) {
      throw storageError("open", path, { cause: e });
    }
    return new SequentialReader(path, fd);
  }

  get size(): number {
    return fs.fstatSync(this.#fd).size;
  }

  /** Exactly `n` bytes, or null at a clean end of file (no byte left); a short read is `truncated`. */
  async readExact(n: number, what: string): Promise<Uint8Array | null> {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      if (this.#at === this.#buffer.length) {
        if (this.#eof || !(await this.#fill())) {
          if (filled === 0 && n > 0) return null;
          throw truncated(this.path, what);
        }
      }
      const take = Math.min(n - filled, this.#buffer.length - this.#at);
      out.set(this.#buffer.subarray(this.#at, this.#at + take), filled);
      this.#at += take;
      filled += take;
    }
    this.consumed += n;
    return out;
  }

  /** Exactly `n` bytes; the end of file is `truncated`. */
  async need(n: number, what: string): Promise<Uint8Array> {
    const b = await this.readExact(n, what);
    if (b === null) throw truncated(this.path, what);
    return b;
  }

  /** True when no byte is left. */
  async atEnd(): Promise<boolean> {
    if (this.#at < this.#buffer.length) return false;
    return this.#eof || !(await this.#fill());
  }

  async #fill(): Promise<boolean> {
    const buf = new Uint8Array(READ_BUFFER);
    const n = await new Promise<number>((resolve, reject) => {
      fs.read(this.#fd, buf, 0, buf.length, this.#position, (e, bytes) => e ? reject(storageError("read", this.path, { cause: e })) : resolve(bytes));
    });
    this.#position += n;
    if (n === 0) {
      this.#eof = true;
      return false;
    }
    this.#buffer = buf.subarray(0, n);
    this.#at = 0;
    return true;
  }

  [Symbol.asyncDispose](): Promise<void> {
    fs.closeSync(this.#fd);
    return Promise.resolve();
  }
}

function truncated(path: string, what: string): Error {
  return new OfflineFormatError(`it ends inside ${what}: the file is truncated (${path})`);
}

export class SequentialWriter implements AsyncDisposable {
  readonly path: string;
  readonly workPath: string;
  readonly #fd: number;
  #position = 0;
  #committed = false;

  private constructor(path: string, workPath: string, fd: number) {
    this.path = path;
    this.workPath = workPath;
    this.#fd = fd;
  }

  /** A new work file `.NAME.ssync-writing` beside `path` (an old one of ours is replaced). */
  static create(path: string): SequentialWriter {
    const dir = nodePath.dirname(nodePath.resolve(path));
    const workPath = nodePath.join(dir, `.${nodePath.basename(path)}.ssync-writing`);
    let fd: number;
    try {
      fs.rmSync(workPath, { force: true });
      fd = fs.openSync(workPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
      fs.fchmodSync(fd, 0o600);
    } catch (e) {
      throw storageError("create", path, { cause: e });
    }
    return new SequentialWriter(path, workPath, fd);
  }

  get bytes(): number {
    return this.#position;
  }

  async write(b: Uint8Array): Promise<void> {
    let done = 0;
    while (done < b.length) {
      done += await new Promise<number>((resolve, reject) => {
        fs.write(this.#fd, b, done, b.length - done, this.#position + done, (e, n) => e ? reject(storageError("write", this.path, { cause: e })) : resolve(n));
      });
    }
    this.#position += b.length;
  }

  /** fsync, rename over the name, fsync the folder: the file is there, whole. */
  async commit(): Promise<void> {
    try {
      fs.fsyncSync(this.#fd);
      fs.renameSync(this.workPath, this.path);
      this.#committed = true;
      await syncDirectory(nodePath.dirname(nodePath.resolve(this.path)));
    } catch (e) {
      throw storageError("write", this.path, { cause: e });
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    fs.closeSync(this.#fd);
    if (!this.#committed) fs.rmSync(this.workPath, { force: true });
    return Promise.resolve();
  }
}
