/**
 * Network endpoints on the command line. One syntax, HOST[:[PORT][:PATH]]:
 *
 *   HOST, HOST:         the default port, no path
 *   HOST:PORT           PORT all digits, 0..65535
 *   HOST:PORT:PATH      PATH is everything after the second colon, colons included
 *   HOST::PATH          the default port
 *
 * HOST is a name, an IPv4 address, or an IPv6 address in brackets ([fd00::2]:7070:vm.img).
 * The segment right after HOST is always the port, never a guess between port and path:
 * `HOST:vm.img` and a mistyped `HOST:7O71` are refused with the spelling that was probably
 * meant, never read as a file name (scp's HOST:PATH has no port in it; ours does).
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
  const colon = rest.indexOf(":");
  const portText = colon < 0 ? rest : rest.slice(0, colon);
  const path = colon < 0 || colon === rest.length - 1 ? undefined : rest.slice(colon + 1);
  if (portText === "") return { host, port: options.defaultPort ?? DEFAULT_PORT, path, explicitPort: false };
  if (!/^\d+$/.test(portText)) throw new Error(notAPort(spec, { host: spec.slice(0, spec.length - rest.length - 1), portText, path }));
  return { host, port: parsePort(portText, spec), path, explicitPort: true };
}

/** The refusal of a segment after HOST that is no port, with the spellings that work. */
function notAPort(spec: string, o: { host: string; portText: string; path: string | undefined }): string {
  const { host, portText, path } = o;
  // Letters that pass for digits in a typo: O for 0, l and I for 1.
  const digits = portText.replace(/[oO]/g, "0").replace(/[lI]/g, "1");
  const meant = /^\d{1,5}$/.test(digits) && Number(digits) <= 65535 ? `; did you mean ${digits}?` : "";
  const file = path === undefined ? portText : `${portText}:${path}`;
  return `Invalid remote "${spec}": "${portText}" is not a port (digits only${meant}). ` +
    `To name the file ${file} at the default port write ${host}::${file}, or with a port ${host}:${DEFAULT_PORT}:${file}`;
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
