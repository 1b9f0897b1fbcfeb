/**
 * Sockets that hold a listener's handshake slots without a key: from several 127.0.0.x
 * source addresses, each socket sends nothing, the preamble only, or the preamble and a
 * well-formed message 1 (which costs the listener its crypto), then idles; every socket the
 * listener cuts is reopened after `reopenMs`, until stop().
 */
import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { MODE_XX } from "../../protocol/constants.ts";
import { encodeHandshakeFrame } from "../../protocol/handshake-frame.ts";
import { encodePreamble } from "../../protocol/preamble.ts";

export type FloodStyle = "nothing" | "preamble" | "message1";

export interface Flood {
  /** Sockets opened so far (the first ones and every reopening). */
  opened(): number;
  /** Sockets now open. */
  open(): number;
  stop(): Promise<void>;
}

/** The first `n` loopback addresses from 127.0.0.`first`. */
export function loopbackAddresses(first: number, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.0.${first + i}`);
}

export function floodHandshakes(
  port: number,
  options: { addresses: string[]; perAddress: number; styles?: FloodStyle[]; reopenMs?: number },
): Flood {
  const styles = options.styles ?? ["nothing", "message1"];
  const reopenMs = options.reopenMs ?? 50;
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let stopped = false;
  let opened = 0;
  let n = 0;
  const openOne = (localAddress: string, style: FloodStyle) => {
    if (stopped) return;
    opened++;
    const s = connect({ port, host: "127.0.0.1", localAddress });
    sockets.add(s);
    s.on("error", () => {});
    s.once("connect", () => {
      if (style === "preamble") s.write(encodePreamble(MODE_XX));
      if (style === "message1") s.write(Buffer.concat([encodePreamble(MODE_XX), encodeHandshakeFrame(randomBytes(32))]));
    });
    s.on("data", () => {}); // message 2, if it comes, is read and ignored
    s.once("close", () => {
      sockets.delete(s);
      if (stopped) return;
      const t = setTimeout(() => {
        timers.delete(t);
        openOne(localAddress, style);
      }, reopenMs);
      timers.add(t);
    });
  };
  for (const address of options.addresses) {
    for (let i = 0; i < options.perAddress; i++) openOne(address, styles[n++ % styles.length]);
  }
  return {
    opened: () => opened,
    open: () => sockets.size,
    stop: async () => {
      stopped = true;
      for (const t of timers) clearTimeout(t);
      const closing = [...sockets].map((s) => new Promise<void>((r) => (s.destroyed ? r() : s.once("close", () => r()))));
      for (const s of sockets) s.destroy();
      await Promise.all(closing);
    },
  };
}
