/**
 * Network endpoints on the command line. One syntax, HOST[:PORT][:PATH]:
 *
 *   HOST, HOST:         the default port, no path
 *   HOST:PORT           PORT all digits, 0..65535
 *   HOST:PORT:PATH      PATH is everything after the second colon, colons included
 *   HOST::PATH          the default port; names any path, one that looks like a port too
 *   HOST:PATH           the default port, when PATH does not start like a port (below)
 *
 * HOST is a name, an IPv4 address, or an IPv6 address in brackets ([fd00::2]:7070:vm.img).
 * The segment right after HOST is the port when it is all digits, and refused when it is
 * digits mixed with the letters a typo puts among them (O, o for 0; l, I for 1: `7O71`), with
 * the spellings that were probably meant; anything else starts a PATH (`backup:vm.img`, as
 * scp). So a mistyped port is never read as a file name, and every path can be written.
 */
export const DEFAULT_PORT = 7070;

export interface Endpoint {
  host: string;
  port: number;
  path: string | undefined;
  /** The port was written (HOST:PORT…), not the default (HOST, HOST:, HOST::PATH). */
  explicitPort: boolean;
}

export function parsePort(text: string, what: string): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 0 && port <= 65535)) throw new Error(`Invalid port "${text}" in ${what}: use 0..65535`);
  return port;
}

export function parseEndpoint(spec: string, options: { defaultPort?: number } = {}): Endpoint {
  let host: string;
  let rest: string;
  if (spec.startsWith("[")) {
    const close = spec.indexOf("]");
    if (close < 0) throw new Error(`Invalid address "${spec}": missing "]" after an IPv6 address`);
    host = spec.slice(1, close);
    rest = spec.slice(close + 1);
    if (rest !== "" && !rest.startsWith(":")) throw new Error(`Invalid address "${spec}": expected ":" after "]"`);
    rest = rest.slice(1);
  } else {
    const colon = spec.indexOf(":");
    host = colon < 0 ? spec : spec.slice(0, colon);
    rest = colon < 0 ? "" : spec.slice(colon + 1);
  }
  if (host === "" || /[\s\/]/.test(host)) throw new Error(`Invalid address "${spec}": no host name`);
  const defaultPort = options.defaultPort ?? DEFAULT_PORT;
  const colon = rest.indexOf(":");
  const first = colon < 0 ? rest : rest.slice(0, colon);
  const after = colon < 0 || colon === rest.length - 1 ? undefined : rest.slice(colon + 1);
  if (first === "") return { host, port: defaultPort, path: after, explicitPort: false };
  if (/^\d+$/.test(first)) return { host, port: parsePort(first, spec), path: after, explicitPort: true };
  if (looksLikePort(first)) throw new Error(notAPort(spec, { host: spec.slice(0, spec.length - rest.length - 1), first, rest }));
  return { host, port: defaultPort, path: rest, explicitPort: false };
}

/** Digits mixed with letters a typo puts among digits: a port mistyped, not a file name. */
function looksLikePort(text: string): boolean {
  return /^[\dOoIl]{1,6}$/.test(text) && /\d/.test(text);
}

/** The refusal of a mistyped port, with the spellings that work. */
function notAPort(spec: string, o: { host: string; first: string; rest: string }): string {
  const digits = o.first.replace(/[Oo]/g, "0").replace(/[Il]/g, "1");
  const meant = Number(digits) <= 65535 ? `; did you mean ${digits}?` : "";
  return `Invalid remote "${spec}": "${o.first}" is not a port (digits only${meant}). ` +
    `To name the file ${o.rest} instead, write ${o.host}::${o.rest} (default port) or ${o.host}:${DEFAULT_PORT}:${o.rest}`;
}

/**
 * A command-line argument that reads as HOST:…, not as a local path: a colon comes before
 * any slash. A local file with a colon in its name is named with a slash first: ./a:b.
 */
export function looksLikeRemote(text: string): boolean {
  const colon = text.indexOf(":");
  const slash = text.indexOf("/");
  return colon > 0 && (slash < 0 || colon < slash);
}

/** "host:port", IPv6 in brackets. */
export function formatEndpoint(e: { host: string; port: number }): string {
  return `${e.host.includes(":") ? `[${e.host}]` : e.host}:${e.port}`;
}
