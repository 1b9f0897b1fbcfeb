/**
 * The command-line conventions a sysadmin expects (issue 10, scope 5), through the real CLI
 * (scripts/ssync as child processes; a real listener on 127.0.0.1 where one is needed):
 * - `-n` is `--dry-run`;
 * - an unknown option or command fails with exit 2 and names the nearest one;
 * - `--help` has examples, the real config folder (never "<config>") and the exit codes;
 * - `ssync keygen -l FILE` prints a key's fingerprint (private or public key file);
 * - `ssync known-hosts list` and `ssync known-hosts remove HOST[:PORT]` (atomic, strict modes).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { withCliSetup } from "./helpers/cli-setup.ts";
import { runCli } from "./helpers/network.ts";
import { makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const MiB = 1024 ** 2;
const T = { timeout: 60_000 };

describe("ssync command-line conventions", () => {
  test("-n is --dry-run: nothing is written", T, async () => {
    await withTempDir(async (dir) => {
      const src = path.join(dir, "src.img");
      const dst = path.join(dir, "dst.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 64 * 1024 }] });
      const r = await runCli(["sync", "-n", "--json", src, dst], { config: dir });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(r.stdout).dryRun, true);
      assert.equal(fs.existsSync(dst), false, "a dry run creates nothing");
    });
  });

  test("an unknown option or command: exit 2, naming the nearest one", T, async () => {
    await withTempDir(async (dir) => {
      const cases: [string[], RegExp][] = [
        [["sync", "--dry-rn", "a", "b"], /^ssync: Unknown option --dry-rn for ssync sync .*did you mean --dry-run\?$/m],
        [["push", "--acept-new", "a", "h:1"], /Unknown option --acept-new .*did you mean --accept-new\?/],
        [["sync", "--blocksize=64K", "a", "b"], /did you mean --block-size\?/],
        [["snyc", "a", "b"], /^ssync: Unknown command snyc .*did you mean sync\?$/m],
        [["known-hosts", "lst"], /did you mean list\?/],
        [["sync", "--no-refin", "a", "b"], /Unknown option --no-refin .*did you mean --no-refine\?/],
        [["--bogus"], /Unknown option --bogus without a command/],
      ];
      for (const [args, expected] of cases) {
        const r = await runCli(args, { config: dir });
        assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
        assert.match(r.stderr, expected, args.join(" "));
      }
      // Nothing near enough: no guess.
      const far = await runCli(["sync", "--zzzzzz", "a", "b"], { config: dir });
      assert.equal(far.code, 2);
      assert.doesNotMatch(far.stderr, /did you mean/);
    });
  });

  test("--help names the real config folder, shows examples and the exit codes", T, async () => {
    await withTempDir(async (dir) => {
      const folder = path.join(dir, "ssync");
      for (const args of [["--help"], ["push", "--help"], ["pull", "--help"], ["sync", "--help"], ["keygen", "--help"], ["listen", "--help"]]) {
        const r = await runCli(args, { config: dir });
        assert.equal(r.code, 0, r.stderr);
        assert.doesNotMatch(r.stdout, /<config>/, `${args.join(" ")}: <config> is never defined`);
        assert.ok(r.stdout.includes(`Config folder:\n  ${folder} `), `${args.join(" ")} names ${folder}: ${r.stdout}`);
        if (args.length > 1) assert.match(r.stdout, /Examples:\n {2}ssync /, `${args.join(" ")} has examples`);
      }
      const push = await runCli(["push", "--help"], { config: dir });
      assert.ok(push.stdout.includes(`default: ${folder}/id_ssync`), "the key's default path, in full");
      assert.match(push.stdout, /-n, --dry-run/);
      assert.match(push.stdout, /-v, --verbose/);
      assert.doesNotMatch(push.stdout, /\(default: true\)/, "cac's noise after --no-X options is gone");
      assert.match(push.stdout, /Exit codes:\n {2}0 {2}success\n {2}1 .*\n {2}2 .*\n {2}3 .*\n {2}4 .*\n {2}5 /);
    });
  });

  test("keygen -l FILE prints the fingerprint of a private or a public key file", T, async () => {
    await withTempDir(async (dir) => {
      const key = path.join(dir, "k");
      const made = await runCli(["keygen", "-f", key], { config: dir });
      assert.equal(made.code, 0, made.stderr);
      const fp = /^fingerprint (SHA256:\S+)$/m.exec(made.stdout)![1];
      for (const file of [key, `${key}.pub`]) {
        const r = await runCli(["keygen", "-l", file], { config: dir });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.split(" ")[0], fp, `${file}: ${r.stdout}`);
      }
      assert.match((await runCli(["keygen", "-l", `${key}.pub`], { config: dir })).stdout, /public key/);
      assert.equal(fs.readdirSync(dir).sort().join(" "), "k k.pub", "-l makes nothing");
      // A private key others can read is refused, as everywhere.
      fs.chmodSync(key, 0o644);
      const loose = await runCli(["keygen", "-l", key], { config: dir });
      assert.equal(loose.code, 1);
      assert.match(loose.stderr, /Refusing key .*readable by others/);
      fs.writeFileSync(path.join(dir, "junk"), "hello\n");
      const junk = await runCli(["keygen", "-l", path.join(dir, "junk")], { config: dir });
      assert.equal(junk.code, 1);
      assert.match(junk.stderr, /Cannot read key .*junk: neither an ssync private key nor a public key/);
    });
  });

  test("-v/--verbose says where, with which host key and settings; -V is the version; -q wins over -v", T, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, remote, listener }) => {
      const src = path.join(dir, "v.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 4096 }] });
      const r = await runCli(["push", "-v", "--bwlimit", "10M", src, `${remote}:v.img`], { config: client });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`^ssync: connected to ${remote.replace(/\./g, "\\.")}: host key ${listener.fingerprint.replace(/\+/g, "\\+")}$`, "m"));
      assert.match(r.stderr, /^ssync: push .*v\.img -> .*:v\.img: block size 64 KiB, hash poly1305, compress auto, refine on, journaled, bwlimit 10\.0 MiB\/s$/m);
      const quiet = await runCli(["push", "-v", "-q", src, `${remote}:v.img`], { config: client });
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.equal(quiet.stderr + quiet.stdout, "", "-q: nothing, -v or not");
      const local = await runCli(["sync", "--verbose", src, path.join(dir, "w.img")], { config: client });
      assert.match(local.stderr, /^ssync: sync .* -> .*w\.img: block size 64 KiB/m);
      const version = await runCli(["-V"], { config: client });
      assert.match(version.stdout, /^ssync \d+\.\d+\.\d+ \(/);
    });
  });

  test("known-hosts list shows the pin; remove forgets it, and the next push finds the host unknown", { timeout: 120_000 }, async () => {
    await withCliSetup({ pinHostKey: true }, async ({ dir, client, remote, listener }) => {
      const file = path.join(client, "ssync", "known_hosts");
      fs.appendFileSync(file, "otherhost:7070 ssync-x25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= other\n", { mode: 0o644 }); // Deno applies 0666 without a mode
      const list = await runCli(["known-hosts", "list"], { config: client });
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(`^${remote.replace(/\./g, "\\.")} ${listener.fingerprint.replace(/\+/g, "\\+")}( |$)`, "m"));
      assert.match(list.stdout, /^otherhost:7070 SHA256:\S+ other$/m);

      const src = path.join(dir, "a.img");
      makeSparseFile(src, { size: MiB, chunks: [{ offset: 0, length: 4096 }] });
      const before = fs.statSync(file);
      const removed = await runCli(["known-hosts", "remove", remote], { config: client });
      assert.equal(removed.code, 0, removed.stderr);
      assert.match(removed.stdout, new RegExp(`^Removed ${remote.replace(/\./g, "\\.")} from `));
      const after = fs.statSync(file);
      assert.notEqual(after.ino, before.ino, "rewritten as a new file, renamed into place");
      assert.equal(after.mode & 0o777, before.mode & 0o777 & ~0o022, "the mode kept, never group/other-writable");
      assert.match(fs.readFileSync(file, "utf8"), /^otherhost:7070 /m, "other pins stay");
      assert.doesNotMatch(fs.readFileSync(file, "utf8"), /^127\.0\.0\.1:/m);
      assert.deepEqual(fs.readdirSync(path.dirname(file)).filter((n) => n.startsWith(".")), [], "no temporary file left");

      const push = await runCli(["push", src, `${remote}:a.img`], { config: client });
      assert.equal(push.code, 5, push.stderr);
      assert.match(push.stderr, /host key of .* is unknown/);

      const again = await runCli(["known-hosts", "remove", remote], { config: client });
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /is not pinned in .*: nothing removed/);
      const usage = await runCli(["known-hosts", "remove"], { config: client });
      assert.equal(usage.code, 2);

      // A known_hosts others may write is refused, not rewritten.
      fs.chmodSync(file, 0o666);
      const loose = await runCli(["known-hosts", "remove", "otherhost"], { config: client });
      assert.equal(loose.code, 1);
      assert.match(loose.stderr, /Refusing known hosts .*writable by group or others/);
    });
  });
});
