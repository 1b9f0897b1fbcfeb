/**
 * What one client counts as for the listener's handshake caps and rates: the prefixes of its
 * address, finest first. An IPv4 address (also when mapped into IPv6) is one prefix, /32.
 * An IPv6 address is two, its /64 (one host may hold a whole /64) and its /48 (one site may
 * hold a whole /48); each is counted, so neither many addresses in one /64 nor many /64s in
 * one /48 get more than one prefix's share.
 */

/** The prefixes of `address` (as node:net reports it), finest first, e.g. ["10.1.2.3"] or
 *  ["2001:db8:0:12::/64", "2001:db8:0::/48"]. */
export function addressPrefixes(address: string): string[] {
  const v4 = address.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
  if (!v4.includes(":")) return [v4];
  const groups = ipv6Groups(v4);
  const text = (n: number) => groups.slice(0, n).map((g) => g.toString(16)).join(":");
  return [`${text(4)}::/64`, `${text(3)}::/48`];
}

/** The finest prefix: the IPv4 address, or the IPv6 /64. */
export function addressKey(address: string): string {
  return addressPrefixes(address)[0];
}

/** The eight 16-bit groups of an IPv6 address (zone dropped, an IPv4 tail as two groups). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase().split("%")[0];
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map((x) => Number(x) & 0xff);
    text = text.slice(0, dotted.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail = ""] = text.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = text.includes("::") ? (tail === "" ? [] : tail.split(":")) : [];
  const fill = Array(Math.max(0, 8 - left.length - right.length)).fill("0");
  return [...left, ...fill, ...right].slice(0, 8).map((g) => Number.parseInt(g, 16) & 0xffff || 0);
}
