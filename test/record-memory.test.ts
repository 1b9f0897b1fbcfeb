import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { connect } from "node:net";
import { once } from "node:events";
import process from "node:process";
import { CipherState } from "../src/noise/cipher-state.ts";
import { cipherFunction } from "../src/noise/cipher-function.ts";
import { DEFAULT_MAX_UNREAD_BYTES, DEFAULT_MAX_UNSENT_BYTES, NoiseRecordChannel } from "../src/net/noise-record-channel.ts";
import { releaseBuffer } from "../src/util/release-buffer.ts";

/**
 * The record layer frees its dead MiB-sized buffers at once (issue 9, peak RSS): 512 records
 * of 1 MiB cross real TCP on 127.0.0.1 between two channels in this process, and the bytes
 * held by ArrayBuffers, sampled all along, stay within a few records' worth. Without the
 * releases (socket chunks, frame bodies gathered across chunks, ciphertexts once written) the
 * dead buffers wait for V8's collections, which let tens of MiB pile up.
 *
 * The sender reuses one plaintext (send() reads no part after it resolved); the receiver
 * checks each record's bytes, then releases it, as the destination does once it wrote DATA.
 */
const RECORDS = 512;
const MIB = 1 << 20;
/**
 * What the channels may hold by design — the sender's socket up to its threshold (4 MiB), the
 * receiver's queue up to its own (8 MiB) — plus a dozen records in hand (one gathered, one
 * checked, the shared plaintext, the kernel's socket buffers in between). Measured: 8–18 MiB
 * with the releases; without them 95–110 MiB, and ~65 MiB without either the ciphertexts'
 * or the gathered bodies' release alone.
 */
const LIMIT = DEFAULT_MAX_UNSENT_BYTES + DEFAULT_MAX_UNREAD_BYTES + 12 * MIB;

const chacha = cipherFunction("ChaChaPoly");

/** Bytes in ArrayBuffers (Deno reports them only inside `external`). */
function bufferBytes(): number {
  const u = process.memoryUsage();
  return u.arrayBuffers > 0 ? u.arrayBuffers : u.external;
}

async function tcpPair(): Promise<{ client: Socket; server: Socket }> {
  const listener: Server = createServer({ pauseOnConnect: true });
  listener.listen(0, "127.0.0.1");
  await once(listener, "listening");
  const port = (listener.address() as { port: number }).port;
  const accepted = once(listener, "connection");
  const client = connect(port, "127.0.0.1");
  await once(client, "connect");
  const [server] = (await accepted) as [Socket];
  listener.close();
  return { client, server };
}

test(`the record layer holds a few MiB of buffers while ${RECORDS} records of 1 MiB cross`, { timeout: 60_000 }, async () => {
  const { client, server } = await tcpPair();
  const up = randomBytes(32);
  const down = randomBytes(32);
  await using sender = new NoiseRecordChannel(client, { send: new CipherState(chacha, up), receive: new CipherState(chacha, down) });
  await using receiver = new NoiseRecordChannel(server, { send: new CipherState(chacha, down), receive: new CipherState(chacha, up) });

  const base = bufferBytes();
  let high = 0;
  const sample = () => {
    high = Math.max(high, bufferBytes() - base);
  };
  const timer = setInterval(sample, 1);
  try {
    const record = new Uint8Array(MIB).fill(0x5a);
    const sending = (async () => {
      for (let i = 0; i < RECORDS; i++) {
        record[0] = i & 0xff;
        record[MIB - 1] = (i >> 8) & 0xff;
        await sender.send(record);
        sample();
      }
      sender.close();
    })();
    let got = 0;
    for (;;) {
      const r = await receiver.receive();
      if (r === null) break;
      assert.equal(r.length, MIB);
      assert.equal(r[0], got & 0xff);
      assert.equal(r[MIB - 1], (got >> 8) & 0xff);
      assert.equal(r[MIB >> 1], 0x5a);
      got++;
      sample();
      releaseBuffer(r);
    }
    await sending;
    assert.equal(got, RECORDS);
  } finally {
    clearInterval(timer);
  }
  console.log(`record layer, ${RECORDS} MiB over TCP: ArrayBuffer high-water ${(high / MIB).toFixed(1)} MiB above the start`);
  assert.ok(high < LIMIT, `ArrayBuffers held ${(high / MIB).toFixed(1)} MiB at their peak, more than ${LIMIT / MIB} MiB`);
});
