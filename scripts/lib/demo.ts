/**
 * The demo: a generated sparse "VM image" kept in sync through a real listener on loopback.
 * 1. keys for a client and a listener in a temporary config directory;
 * 2. `ssync listen` on 127.0.0.1 (a free port), the client's key authorized;
 * 3. push a 4 GiB sparse image with 24 MiB of data; change 1% of it and push again;
 * 4. pull it back to a new file; `ssync sync` locally for comparison; then clean up.
 */
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";

const here = path.dirname(new URL(import.meta.url).pathname);
const ssync = path.join(here, "..", "ssync");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ssync-demo-"));
const env = { ...process.env, XDG_CONFIG_HOME: path.join(dir, "config") };
const MiB = 1 << 20;

function run(args: string[]): void {
  console.log(`\n$ ssync ${args.join(" ")}`);
  const r = spawnSync(ssync, args, { env, stdio: "inherit", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`ssync ${args[0]} failed (exit ${r.status})`);
}

function writeAt(file: string, offset: number, data: Uint8Array): void {
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
}

const listener = { proc: undefined as ReturnType<typeof spawn> | undefined };
try {
  const image = path.join(dir, "vm.img");
  const root = path.join(dir, "backup");
  fs.mkdirSync(root);
  fs.writeFileSync(image, "");
  fs.truncateSync(image, 4 * 1024 * MiB);
  for (let i = 0; i < 24; i++) writeAt(image, i * 170 * MiB + i * 4096, new Uint8Array(MiB).map(() => Math.random() * 256));
  console.log(`A sparse image: ${image}, 4 GiB apparent, ${fs.statSync(image).blocks * 512 / MiB} MiB allocated`);

  run(["keygen", "-f", path.join(dir, "config", "ssync", "id_ssync")]);
  run(["keygen", "-f", path.join(dir, "host_key")]);
  fs.copyFileSync(path.join(dir, "config", "ssync", "id_ssync.pub"), path.join(dir, "authorized_keys"));

  console.log(`\n$ ssync listen --bind 127.0.0.1:0 --root ${root} --key ${dir}/host_key --authorized-keys ${dir}/authorized_keys &`);
  const proc = spawn(ssync, ["listen", "--bind", "127.0.0.1:0", "--root", root, "--key", path.join(dir, "host_key"), "--authorized-keys", path.join(dir, "authorized_keys")], { env, stdio: ["ignore", "pipe", "inherit"] });
  listener.proc = proc;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the listener did not start within 30 s")), 30_000);
    let out = "";
    proc.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /listening on \S+:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        console.log(out.trim());
        resolve(Number(m[1]));
      }
    });
    proc.on("exit", (code) => reject(new Error(`the listener exited with ${code}`)));
  });

  run(["push", "--accept-new", image, `127.0.0.1:${port}:vm.img`]);
  for (let i = 0; i < 40; i++) writeAt(image, i * 100 * MiB + 512, new Uint8Array([1, 2, 3, i]));
  console.log("\nChanged 40 blocks of the image; pushing again sends only those:");
  run(["push", image, `127.0.0.1:${port}:vm.img`]);
  run(["pull", "--verify", `127.0.0.1:${port}:vm.img`, path.join(dir, "restored.img")]);
  run(["sync", image, path.join(dir, "local-copy.img")]);
  console.log(`\nDone: ${path.join(root, "vm.img")} and restored.img match the image; each allocates about ${Math.round(fs.statSync(path.join(root, "vm.img")).blocks * 512 / MiB)} MiB.`);
} finally {
  listener.proc?.kill();
  fs.rmSync(dir, { recursive: true, force: true });
}
