import type { CipherState } from "./cipher-state.ts";
import { TAG_LENGTH } from "./cipher-function.ts";
import { type NoiseProtocol, parseProtocolName } from "./noise-protocol.ts";
import { SymmetricState } from "./symmetric-state.ts";
import { dh, DH_LENGTH, generateKeyPair, type KeyPair } from "./x25519.ts";

export interface HandshakeOptions {
  initiator: boolean;
  /** Bytes both sides must agree on; mixed into h before the first message. */
  prologue?: Uint8Array;
  /** Our static key pair (XX sends it, encrypted, in message 2 or 3). */
  staticKeyPair: KeyPair;
  /** Fixed ephemeral key pair, for test vectors only; fresh random otherwise. */
  ephemeralKeyPair?: KeyPair;
  /** 32-byte pre-shared key, required by psk patterns, refused otherwise. */
  psk?: Uint8Array;
}

/** The transport cipher states, oriented for this side. */
export interface TransportKeys {
  send: CipherState;
  receive: CipherState;
  /** The final handshake hash h: a unique channel binding. */
  handshakeHash: Uint8Array;
}

/**
 * Noise HandshakeState (spec rev 34, section 5.3) for the patterns in noise-protocol.ts.
 *
 * Invariants: messages alternate initiator → responder → …; any failure (bad length,
 * authentication, low-order key) makes the state unusable; split() only after the last message.
 */
export class HandshakeState {
  readonly protocol: NoiseProtocol;
  readonly initiator: boolean;
  #symmetric: SymmetricState;
  #s: KeyPair;
  #e: KeyPair | null = null;
  #fixedE: KeyPair | undefined;
  #rs: Uint8Array | null = null;
  #re: Uint8Array | null = null;
  #psk: Uint8Array | undefined;
  #index = 0;
  #failed = false;

  constructor(protocolName: string, options: HandshakeOptions) {
    this.protocol = parseProtocolName(protocolName);
    this.initiator = options.initiator;
    if (options.staticKeyPair.secretKey.length !== 32 || options.staticKeyPair.publicKey.length !== 32) {
      throw new RangeError("Cannot start a Noise handshake: the static key pair must be 32-byte X25519 keys");
    }
    this.#s = options.staticKeyPair;
    this.#fixedE = options.ephemeralKeyPair;
    if (this.protocol.pskMode) {
      if (options.psk === undefined || options.psk.length !== 32) {
        throw new RangeError(`Cannot start ${protocolName}: it needs a 32-byte pre-shared key`);
      }
      this.#psk = options.psk;
    } else if (options.psk !== undefined) {
      throw new Error(`Cannot start ${protocolName} with a pre-shared key: the pattern has no psk token`);
    }
    this.#symmetric = new SymmetricState(protocolName, this.protocol);
    this.#symmetric.mixHash(options.prologue ?? new Uint8Array(0));
  }

  /** True when all handshake messages have been written or read. */
  isComplete(): boolean {
    return this.#index >= this.protocol.messages.length;
  }

  /** True when the next message is ours to write. */
  isMyTurn(): boolean {
    return !this.isComplete() && (this.#index % 2 === 0) === this.initiator;
  }

  /** The peer's static public key, once received. */
  get remoteStatic(): Uint8Array | null {
    return this.#rs;
  }

  handshakeHash(): Uint8Array {
    return this.#symmetric.handshakeHash();
  }

  /** The exact length of the next handshake message when it carries `payloadLength` bytes. */
  nextMessageLength(payloadLength = 0): number {
    let keyed = this.#symmetric.cipherState.hasKey();
    let length = 0;
    for (const token of this.protocol.messages[this.#index] ?? []) {
      if (token === "e") {
        length += DH_LENGTH;
        if (this.protocol.pskMode) keyed = true;
      } else if (token === "s") {
        length += DH_LENGTH + (keyed ? TAG_LENGTH : 0);
      } else {
        keyed = true;
      }
    }
    return length + payloadLength + (keyed ? TAG_LENGTH : 0);
  }

  #check(write: boolean): readonly string[] {
    if (this.#failed) throw new Error("Cannot continue the Noise handshake: it already failed");
    if (this.isComplete()) throw new Error("Cannot continue the Noise handshake: it is complete");
    if (this.isMyTurn() !== write) {
      throw new Error(`Cannot ${write ? "write" : "read"} Noise message ${this.#index + 1}: it is the peer's turn`);
    }
    return this.protocol.messages[this.#index];
  }

  #dhToken(token: "ee" | "es" | "se" | "ss"): Uint8Array {
    const missing = () => new Error(`Cannot process Noise token ${token}: a key is missing`);
    const e = this.#e, re = this.#re, rs = this.#rs, s = this.#s;
    // es: initiator's e with responder's s; se: initiator's s with responder's e.
    const mine = token === "ee" || (token === "es" && this.initiator) || (token === "se" && !this.initiator) ? e : s;
    const theirs = token === "ee" || (token === "es" && !this.initiator) || (token === "se" && this.initiator)
      ? re
      : rs;
    if (mine === null || theirs === null) throw missing();
    return dh(mine.secretKey, theirs);
  }

  #mixToken(token: string): boolean {
    const sym = this.#symmetric;
    if (token === "ee" || token === "es" || token === "se" || token === "ss") {
      sym.mixKey(this.#dhToken(token));
      return true;
    }
    if (token === "psk") {
      sym.mixKeyAndHash(this.#psk!);
      return true;
    }
    return false;
  }

  /** WriteMessage(payload): the next handshake message. */
  writeMessage(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    const tokens = this.#check(true);
    const sym = this.#symmetric;
    const parts: Uint8Array[] = [];
    try {
      for (const token of tokens) {
        if (token === "e") {
          this.#e = this.#fixedE ?? generateKeyPair();
          parts.push(this.#e.publicKey);
          sym.mixHash(this.#e.publicKey);
          if (this.protocol.pskMode) sym.mixKey(this.#e.publicKey);
        } else if (token === "s") {
          parts.push(sym.encryptAndHash(this.#s.publicKey));
        } else if (!this.#mixToken(token)) {
          throw new Error(`Cannot write Noise token ${token}`);
        }
      }
      parts.push(sym.encryptAndHash(payload));
    } catch (error) {
      this.#failed = true;
      throw error;
    }
    this.#index++;
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const part of parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }

  /** ReadMessage(message): the peer's payload; throws on any malformed or inauthentic message. */
  readMessage(message: Uint8Array): Uint8Array {
    const tokens = this.#check(false);
    const sym = this.#symmetric;
    const minimum = this.nextMessageLength(0);
    try {
      if (message.length < minimum) {
        throw new Error(`Cannot read Noise message ${this.#index + 1}: ${message.length} bytes, need at least ${minimum}`);
      }
      let offset = 0;
      const take = (n: number) => message.subarray(offset, (offset += n));
      for (const token of tokens) {
        if (token === "e") {
          this.#re = new Uint8Array(take(DH_LENGTH));
          sym.mixHash(this.#re);
          if (this.protocol.pskMode) sym.mixKey(this.#re);
        } else if (token === "s") {
          const length = DH_LENGTH + (sym.cipherState.hasKey() ? TAG_LENGTH : 0);
          this.#rs = new Uint8Array(sym.decryptAndHash(take(length)));
        } else if (!this.#mixToken(token)) {
          throw new Error(`Cannot read Noise token ${token}`);
        }
      }
      const payload = sym.decryptAndHash(message.subarray(offset));
      this.#index++;
      return payload;
    } catch (error) {
      this.#failed = true;
      throw error;
    }
  }

  /** Split() once complete: our send and receive transport cipher states. */
  split(): TransportKeys {
    if (!this.isComplete() || this.#failed) throw new Error("Cannot split: the Noise handshake is not complete");
    const [c1, c2] = this.#symmetric.split();
    return {
      send: this.initiator ? c1 : c2,
      receive: this.initiator ? c2 : c1,
      handshakeHash: this.#symmetric.handshakeHash(),
    };
  }
}
