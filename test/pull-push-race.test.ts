/**
 * A pull racing a push of the same file never receives a torn image (issue 8, acceptance).
 *
 * One real `ssync listen` on 127.0.0.1 (a child process). A pusher in this process (real
 * client sessions over TCP, no CLI start-up between them, so commits come often) alternates
 * two different sources A and B onto one name, while pullers run `ssync pull` of that name in
 * a loop (child processes), each into a fresh local file, for SSYNC_RACE_SECONDS (default 10)
 * at most and a bounded number of rounds. Every pull must either exit 0 with content byte-identical to A or to B, or fail
 * with exit 3 (the source changed during the sync) or as busy (the listener refused a reader
 * while a sync into the file completes). Exit 0 with anything else is a torn image. Pushes
 * follow each other without a gap, so most pulls overlap one; a last pull, with nothing
 * racing it, must get the last image pushed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { WorkerPool } from "../src/engine/worker-pool.ts";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { type CliResult, clientSync, finished, spawnCli } from "./helpers/network.ts";
import { fileHash, makeSparseFile } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const SECONDS = Number(process.env.SSYNC_RACE_SECONDS ?? 10);
/** Rounds per loop, whatever the time: the loops are bounded either way. */
const MAX_ROUNDS = 1000;
const PULLERS = 3;

function run(args: string[], config: string): Promise<CliResult> {
  return finished(spawnCli(args, { config }), 60_000);
}

test(`pulls racing pushes of the same file never exit 0 with a mix (${SECONDS} s)`, { timeout: (SECONDS + 120) * 1000 }, async () => {
  await withCliSetup({ keygen: false }, async ({ dir, client, key, listener }) => {
    // Two images of one size and layout whose every data block differs: a push A→B rewrites all of it.
    const sources = [path.join(dir, "a.img"), path.join(dir, "b.img")];
    sources.forEach((file, i) =>
      makeSparseFile(file, { size: 128 * MiB, chunks: [{ offset: 0, length: 32 * MiB, seed: i + 1 }, { offset: 64 * MiB, length: 32 * MiB, seed: i + 1 }] })
    );
    const images = sources.map(fileHash);
    const pool = new WorkerPool();
    try {
      const remote = `127.0.0.1:${listener.port}:vm.img`;
      const first = await run(["push", "--accept-new", sources[0], remote], client);
      assert.equal(first.code, 0, first.stderr);

      const deadline = Date.now() + SECONDS * 1000;
      // A loaded machine may fit fewer rounds in SECONDS: go on until two pushes are done (the
      // race needs both images), within a hard bound.
      const hardDeadline = deadline + 60_000;
      const racing = () => Date.now() < deadline || (pushes < 2 && Date.now() < hardDeadline);
      const target = { listener: { port: listener.port, address: `127.0.0.1:${listener.port}` } };
      const knownHosts = path.join(client, "ssync", "known_hosts");
      let pushes = 0;
      const pushErrors: string[] = [];
      const counts = { a: 0, b: 0, changed: 0, busy: 0 };
      const bad: string[] = [];
      const pusher = async () => {
        for (let i = 1; i <= MAX_ROUNDS && racing(); i++) {
          try {
            await clientSync(target, { mode: "push", local: sources[i % 2], name: "vm.img", key: key!, pool, knownHosts });
          } catch (e) {
            pushErrors.push(`push ${i}: ${e}`); // asserted once the pullers are done
            return;
          }
          pushes = i;
        }
      };
      const puller = async (n: number) => {
        for (let i = 0; i < MAX_ROUNDS && racing(); i++) {
          const local = path.join(dir, `pulled-${n}-${i}.img`);
          const r = await run(["pull", remote, local], client);
          if (r.code === 0) {
            const got = fileHash(local);
            if (got === images[0]) counts.a++;
            else if (got === images[1]) counts.b++;
            else bad.push(`pull ${n}.${i} exited 0 with neither image (torn): ${r.stdout.trim()}`);
          } else if (r.code === 3 && /the source changed during the sync/.test(r.stderr)) {
            counts.changed++;
          } else if (r.code !== 0 && /busy|must be completed first/.test(r.stderr)) {
            counts.busy++;
          } else {
            bad.push(`pull ${n}.${i}: exit ${r.code} ${r.signal ?? ""}: ${r.stderr.trim()}`);
          }
          fs.rmSync(local, { force: true });
        }
      };
      await Promise.all([pusher(), ...Array.from({ length: PULLERS }, (_, n) => puller(n))]);
      const pulls = counts.a + counts.b + counts.changed + counts.busy + bad.length;
      console.log(
        `race: ${pushes} pushes, ${pulls} pulls: ${counts.a} A, ${counts.b} B, ${counts.changed} source changed, ` +
          `${counts.busy} busy, ${bad.length} bad`,
      );
      assert.deepEqual(bad, [], `${bad.length} of ${pulls} pulls went wrong`);
      assert.deepEqual(pushErrors, []);
      assert.ok(pushes >= 2 && pulls >= 2, `too few rounds: ${pushes} pushes, ${pulls} pulls`);
      const last = path.join(dir, "last.img");
      const r = await run(["pull", remote, last], client);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fileHash(last), images[pushes % 2], "the last pull is not the last image pushed");
    } finally {
      await pool[Symbol.asyncDispose]();
    }
  });
});
