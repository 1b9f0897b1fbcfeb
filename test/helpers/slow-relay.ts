/**
 * A TCP relay on 127.0.0.1 that carries bytes between a client and a listener at a bounded
 * rate in each direction: a slow link for tests of link-bound behaviour (the sender's queue
 * backs up). Bytes pass unchanged and in order.
 *
 * Pacing: after each chunk read from one side, that side is paused until the chunk's time at
 * `bytesPerSecond` has passed, and while the other side's socket is past its high-water mark.
 * So the relay holds at most a chunk per direction, and the kernel buffers in front of it fill
 * up as on a slow link. Idle time earns at most BURST_MS of credit: a direction quiet for a
 * while (the handshake, then hashing before the first DATA) does not then pass a burst at
 * full speed.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

const BURST_MS = 20;

export interface SlowRelayOptions {
  /** Client → listener rate. */
  upBytesPerSecond: number;
  /** Listener → client rate (default: unlimited). */
  downBytesPerSecond?: number;
}

export class SlowRelay implements AsyncDisposable {
  #server: Server;
  #sockets = new Set<Socket>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly port: number;
  /** Bytes carried client → listener, and back. */
  up = 0;
  down = 0;

  private constructor(server: Server, listenerPort: number, options: SlowRelayOptions) {
    this.#server = server;
    this.port = (server.address() as { port: number }).port;
    server.on("connection", (client: Socket) => {
      const upstream = connect({ host: "127.0.0.1", port: listenerPort });
      for (const s of [client, upstream]) {
        s.on("error", () => {});
        this.#sockets.add(s);
        s.once("close", () => {
          this.#sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      this.#pipe(client, upstream, { rate: options.upBytesPerSecond, count: (n) => (this.up += n) });
      this.#pipe(upstream, client, { rate: options.downBytesPerSecond ?? Infinity, count: (n) => (this.down += n) });
    });
  }

  static async start(listenerPort: number, options: SlowRelayOptions): Promise<SlowRelay> {
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return new SlowRelay(server, listenerPort, options);
  }

  #pipe(from: Socket, to: Socket, o: { rate: number; count: (n: number) => void }): void {
    /** When the bytes carried so far are due to have passed, at the rate. */
    let due = -Infinity;
    let waits = 0; // reasons `from` is paused: a pacing delay, a full `to`
    const hold = () => {
      if (waits++ === 0) from.pause();
    };
    const letGo = () => {
      if (--waits === 0 && !from.destroyed) from.resume();
    };
    from.on("data", (chunk: Buffer) => {
      const now = performance.now();
      due = Math.max(due, now - BURST_MS) + (chunk.length / o.rate) * 1000;
      o.count(chunk.length);
      if (!to.write(chunk)) {
        hold();
        to.once("drain", letGo);
      }
      const wait = due - now;
      if (Number.isFinite(wait) && wait > 1) {
        hold();
        const timer = setTimeout(() => {
          this.#timers.delete(timer);
          letGo();
        }, wait);
        this.#timers.add(timer);
      }
    });
    from.on("end", () => to.end());
    from.resume();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
