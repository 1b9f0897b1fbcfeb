import type { Socket } from "node:net";

/**
 * Reads exact byte counts from a socket during the handshake, then hands the socket and
 * any bytes read ahead to the record layer.
 *
 * Invariant: at most `maxBuffered` bytes are held; a peer sending more is an error.
 */
export class SocketReader {
  readonly socket: Socket;
  #maxBuffered: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #want = 0;
  #pending: { resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  #error: Error | null = null;
  #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.#buffered > this.#maxBuffered) {
      this.#setError(new Error(`the peer sent more than ${this.#maxBuffered} bytes during the handshake`));
    }
    this.#serve();
  };
  #onEnd = () => this.#setError(new Error("the peer closed the connection"));
  #onClose = () => this.#setError(new Error("the connection was closed"));
  #onError = (error: Error) => this.#setError(error);

  constructor(socket: Socket, options: { maxBuffered: number }) {
    this.socket = socket;
    this.#maxBuffered = options.maxBuffered;
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("close", this.#onClose);
    socket.on("error", this.#onError);
    socket.resume();
  }

  #setError(error: Error): void {
    if (this.#error) return;
    this.#error = error;
    this.socket.pause();
    this.#serve();
  }

  #serve(): void {
    const pending = this.#pending;
    if (pending === null) return;
    if (this.#buffered >= this.#want) {
      this.#pending = null;
      const all = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks);
      const out = all.subarray(0, this.#want);
      const rest = all.subarray(this.#want);
      this.#chunks = rest.length > 0 ? [rest] : [];
      this.#buffered = rest.length;
      pending.resolve(out);
    } else if (this.#error) {
      this.#pending = null;
      pending.reject(this.#error);
    }
  }

  /** Exactly n bytes; rejects if the connection ends or fails first. */
  read(n: number): Promise<Buffer> {
    if (this.#pending) return Promise.reject(new Error("Cannot read: a read is already pending"));
    return new Promise((resolve, reject) => {
      this.#want = n;
      this.#pending = { resolve, reject };
      this.#serve();
    });
  }

  /** Stops reading: removes our listeners, pauses the socket, returns the bytes read ahead. */
  detach(): Buffer {
    this.socket.pause();
    this.socket.off("data", this.#onData);
    this.socket.off("end", this.#onEnd);
    this.socket.off("close", this.#onClose);
    this.socket.off("error", this.#onError);
    const rest = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }
}
