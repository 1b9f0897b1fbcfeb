/**
 * Parsing of network endpoints on the command line:
 *   HOST, HOST:PORT, HOST:PORT:PATH, HOST:PATH, [V6], [V6]:PORT, [V6]:PORT:PATH, [V6]:PATH.
 * PATH is everything after the host and the optional all-digit port, colons included.
 */
export const DEFAULT_PORT = 7070;

export interface Endpoint {
  host: string;
  port: number;
  path: string | undefined;
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
  let port = options.defaultPort ?? DEFAULT_PORT;
  let path: string | undefined;
  const colon = rest.indexOf(":");
  const first = colon < 0 ? rest : rest.slice(0, colon);
  if (/^\d+$/.test(first)) {
    port = parsePort(first, spec);
    path = colon < 0 ? undefined : rest.slice(colon + 1);
  } else if (rest !== "") {
    path = rest;
  }
  if (path === "") path = undefined;
  return { host, port, path };
}

/** "host:port", IPv6 in brackets. */
export function formatEndpoint(e: { host: string; port: number }): string {
  return `${e.host.includes(":") ? `[${e.host}]` : e.host}:${e.port}`;
}
