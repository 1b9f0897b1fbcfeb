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
 * Invariants: an event is one line whatever its message or fields hold, so a name a client
 * chose cannot forge a line:
 * - control, line-separator and bidi-override characters are escaped as \uXXXX (in json too),
 *   and in text a backslash as \\ (a name holding the 6 characters "\u000a" reads as typed);
 * - a line is at most MAX_LINE_BYTES bytes (json: still one whole object), far below what a
 *   log collector splits (journald: 2048 bytes before systemd 235, LineMax 48K since; each
 *   piece of a split line is an entry of its own whose start, a `<N>` priority included, would
 *   be the client's). Callers clip what a peer chose (`clip`: PEER_TEXT_CHARS) so the rest of
 *   the line survives; a line still too long is cut at its end, saying how long it was.
 */
import { Buffer } from "node:buffer";
import fs from "node:fs";
import process from "node:process";

export type LogLevel = "error" | "warn" | "info" | "debug";
export type LogFormat = "text" | "json";
export type LogFields = Record<string, string | number | boolean | undefined>;

export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

/** The longest line written, in bytes (UTF-8, without its newline). */
export const MAX_LINE_BYTES = 1900;
/** What `clip` keeps of a peer's text (a file name, an error message), in escaped characters. */
export const PEER_TEXT_CHARS = 200;

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
        const head = `${priority}${time}${LEVEL_WORD[level]}`;
        const room = MAX_LINE_BYTES - Buffer.byteLength(head);
        this.#write(head + escapeText(cut(message, { max: room, size: textSize })));
        return;
      }
      case "json": {
        const entry: Record<string, unknown> = { time: this.#now().toISOString(), level, message };
        for (const [name, value] of Object.entries(fields)) {
          if (value !== undefined && !(name in entry)) entry[name] = value;
        }
        this.#write(fitJson(entry));
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

/** The characters escaped as \uXXXX: control, line-separator and bidi-override characters. */
// deno-lint-ignore no-control-regex
const ESCAPED = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** Control, line-separator and bidi-override characters as \uXXXX, so a log line cannot be forged. */
export function escapeControls(text: string): string {
  return text.replace(new RegExp(ESCAPED, "g"), (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** A text line's escaping: a backslash as \\, then escapeControls (so every \ in the line starts an escape). */
function escapeText(text: string): string {
  return escapeControls(text.replaceAll("\\", "\\\\"));
}

/**
 * A peer's text (a file name, an error message) as a log line shows at most of it: its first
 * PEER_TEXT_CHARS characters once escaped, then "…(N chars)" with its whole length.
 */
export function clip(text: string, max = PEER_TEXT_CHARS): string {
  return cut(text, { max, size: escapedChars });
}

/** Escaped characters `c` (one code point) takes in a text line. */
function escapedChars(c: string): number {
  return ESCAPED.test(c) ? 6 : c === "\\" ? 2 : c.length;
}

/** Bytes code point `c` takes in a text line, escaped. */
function textSize(c: string): number {
  return ESCAPED.test(c) ? 6 : c === "\\" ? 2 : Buffer.byteLength(c);
}

const LONE_SURROGATE = /^[\ud800-\udfff]$/;

/** At most the bytes code point `c` takes inside a JSON string, escaped (JSON.stringify, then escapeControls). */
function jsonSize(c: string): number {
  if (ESCAPED.test(c) || LONE_SURROGATE.test(c)) return 6;
  return c === "\\" || c === '"' ? 2 : Buffer.byteLength(c);
}

/** Room "…(N chars)" takes, at most (N < 2^53), measured as `size` would. */
const MARK_ROOM = 40;

/**
 * `text` whole when its `size` (summed per code point) is at most `max`; otherwise as many
 * whole code points as fit in `max` less MARK_ROOM, then "…(N chars)" (N: text.length).
 */
function cut(text: string, o: { max: number; size: (c: string) => number }): string {
  let total = 0;
  let end = -1;
  let at = 0;
  for (const c of text) {
    total += o.size(c);
    if (end < 0 && total > o.max - MARK_ROOM) end = at;
    if (total > o.max) return `${text.slice(0, end)}…(${text.length} chars)`;
    at += c.length;
  }
  return text;
}

/**
 * A json entry as one line of at most MAX_LINE_BYTES: while too long, its longest string (the
 * message or a field; never time or level) is cut to fit; a line that still does not fit
 * (many long fields) keeps only time, level and its cut message.
 */
function fitJson(entry: Record<string, unknown>): string {
  for (;;) {
    const line = escapeControls(JSON.stringify(entry));
    const over = Buffer.byteLength(line) - MAX_LINE_BYTES;
    if (over <= 0) return line;
    let longest: string | undefined;
    for (const [name, value] of Object.entries(entry)) {
      if (name === "time" || name === "level" || typeof value !== "string") continue;
      if (longest === undefined || value.length > (entry[longest] as string).length) longest = name;
    }
    const value = longest === undefined ? "" : entry[longest!] as string;
    if (value.length <= 2 * MARK_ROOM) {
      const message = cut(String(entry.message), { max: MAX_LINE_BYTES / 2, size: jsonSize });
      return escapeControls(JSON.stringify({ time: entry.time, level: entry.level, message }));
    }
    let size = 0;
    for (const c of value) size += jsonSize(c);
    entry[longest!] = cut(value, { max: Math.max(2 * MARK_ROOM, size - over), size: jsonSize });
  }
}
