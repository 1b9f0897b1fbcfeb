// A plain TCP transfer, to measure a link's rate (run inside the bench's network namespaces).
//   node bench-tcp.mjs sink HOST PORT       accept one connection, read until it ends, reply 1 byte
//   node bench-tcp.mjs send HOST PORT BYTES send BYTES, wait for the reply; print seconds
import net from "node:net";

const [mode, host, port, count] = process.argv.slice(2);
if (mode === "sink") {
  const server = net.createServer((sock) => {
    sock.on("data", () => {});
    sock.on("end", () => sock.end(Buffer.from([1]), () => server.close()));
  });
  server.listen(Number(port), host, () => console.log("ready"));
} else if (mode === "send") {
  const total = Number(count);
  const chunk = Buffer.alloc(1 << 20, 0x5a);
  const sock = net.connect(Number(port), host, () => {
    const started = process.hrtime.bigint();
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        sent += n;
        if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return sock.once("drain", pump);
      }
      sock.end();
    };
    sock.once("data", () => {
      console.log(String(Number(process.hrtime.bigint() - started) / 1e9));
      sock.destroy();
    });
    pump();
  });
  sock.on("error", (e) => {
    console.error(`bench-tcp: ${e.message}`);
    process.exit(1);
  });
} else {
  console.error("usage: bench-tcp.mjs sink HOST PORT | send HOST PORT BYTES");
  process.exit(2);
}
