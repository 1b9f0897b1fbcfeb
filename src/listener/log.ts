/**
 * The listener's log: every line `ssync listen` writes about its work goes through one Log,
 * to one stream (stderr in the CLI).
 *
 * - text: one line per event: an ISO time (left out under journald, which stamps each line
 *   itself), "warning: ", "error: " or "debug: " unless the event is plain info, the message.
 *   Under journald each line also starts with its syslog priority ("<4>"), which journald
 *   takes as the entry's priority and strips (journalctl -p warning shows only those).
 * - json: one object per line: time, level, message (the text line's words), and the event's
 *   fields (peer, key, file, byte counts...) under their own names.
 * - debug events (per-connection detail) are written only when `verbose`.
 *
 * Invariant: an event is one line whatever its message or fields hold: control, line-separator
 * and bidi-override characters are escaped as \uXXXX (in json too), so a name a client chose
 * cannot forge a line.
 */
import fs from "node:fs";
import process from "node:process";

export type LogLevel = "error" | "warn" | "info" | "debug";
export type LogFormat = "text" | "json";
export type LogFields = Record<string, string | number | boolean | undefined>;

export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

export interface LogOptions {
  /** Takes one finished line, without its newline. */
  write: (line: string) => void;
  format?: LogFormat;
  /** Under journald: no own time, a syslog priority prefix on text lines. */
  journald?: boolean;
  verbose?: boolean;
  now?: () => Date;
}

export class Log {
  #write: (line: string) => void;
  #format: LogFormat;
  #journald: boolean;
  #verbose: boolean;
  #now: () => Date;

  constructor(options: LogOptions) {
    this.#write = options.write;
    this.#format = options.format ?? "text";
    this.#journald = options.journald ?? false;
    this.#verbose = options.verbose ?? false;
    this.#now = options.now ?? (() => new Date());
  }

  /** Whether debug events are written: callers skip building what would be dropped. */
  get verbose(): boolean {
    return this.#verbose;
  }

  /** An info event: the entry for callers that have only a line to say. */
  log(message: string, fields?: LogFields): void {
    this.event("info", message, fields);
  }

  error(message: string, fields?: LogFields): void {
    this.event("error", message, fields);
  }

  warn(message: string, fields?: LogFields): void {
    this.event("warn", message, fields);
  }

  info(message: string, fields?: LogFields): void {
    this.event("info", message, fields);
  }

  debug(message: string, fields?: LogFields): void {
    this.event("debug", message, fields);
  }

  event(level: LogLevel, message: string, fields: LogFields = {}): void {
    if (level === "debug" && !this.#verbose) return;
    switch (this.#format) {
      case "text": {
        const time = this.#journald ? "" : `${this.#now().toISOString()} `;
        const priority = this.#journald ? `<${SYSLOG_PRIORITY[level]}>` : "";
        this.#write(`${priority}${time}${LEVEL_WORD[level]}${escapeControls(message)}`);
        return;
      }
      case "json": {
        const entry: Record<string, unknown> = { time: this.#now().toISOString(), level, message };
        for (const [name, value] of Object.entries(fields)) {
          if (value !== undefined && !(name in entry)) entry[name] = value;
        }
        this.#write(escapeControls(JSON.stringify(entry)));
        return;
      }
      default: {
        const never: never = this.#format;
        throw new TypeError(`Unknown log format ${never}`);
      }
    }
  }
}

const LEVEL_WORD: Record<LogLevel, string> = { error: "error: ", warn: "warning: ", info: "", debug: "debug: " };
const SYSLOG_PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

/**
 * Whether our stderr is journald's stream: JOURNAL_STREAM ("DEVICE:INODE") names it. A value
 * inherited from a service that started us with stderr elsewhere (a pipe, a file) does not.
 */
export function stderrIsJournal(env: Record<string, string | undefined> = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? "");
  if (!m) return false;
  try {
    const st = fs.fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1]) && st.ino === BigInt(m[2]);
  } catch {
    return false;
  }
}

/** Control, line-separator and bidi-override characters as \uXXXX, so a log line cannot be forged. */
export function escapeControls(text: string): string {
  return text.replace(
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
