/**
 * A batch with a listener over a new connection: dial and handshake exactly as `ssync push`
 * and `pull` do (net/client-channel.ts: known_hosts, the client key, pairing, the idle
 * timeout, --bwlimit), then BATCH (batch-client.ts). The batch owns the connection: closing
 * or disposing it closes the connection too.
 *
 * A listener at its session caps answers EBUSY (a RemoteError): `--wait` is the caller's
 * retryWhileBusy((n) => dialBatch(...)) (cli/wait-while-busy.ts), as for one file; a pairing
 * code is used by the first try only.
 */
import { type ClientChannelOptions, openClientChannel } from "../net/client-channel.ts";
import { formatEndpoint } from "../net/host-port.ts";
import { BatchClient } from "./batch-client.ts";

export async function dialBatch(o: ClientChannelOptions & { slots?: number }): Promise<BatchClient> {
  const client = await openClientChannel(o);
  try {
    return await BatchClient.start(client.channel, {
      slots: o.slots,
      activity: client.activity,
      peer: formatEndpoint(o),
      signal: o.signal,
      owner: client,
    });
  } catch (e) {
    await client[Symbol.asyncDispose]();
    throw e;
  }
}
