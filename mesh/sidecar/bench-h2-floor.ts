// The floor under the sidecar's HTTP/2 hop: what Bun's node:http2 costs by itself for gRPC-shaped unary
// calls (1 KB, length-prefixed, status in trailers) at a fixed rate, client and server in two processes
// — against the same bytes over a bare TCP socket (Bun.listen/Bun.connect) for the kernel's share.
// Nothing of the mesh runs here; compare the figures with bench-mesh.ts's per-sidecar CPU, and the
// loaded server's RSS (printed after each) with a sidecar's: the memory floor of a Bun process doing
// this networking.
//
//   bun mesh/sidecar/bench-h2-floor.ts [--rate 1000] [--seconds 10] [--warmup 15] [--kinds h2,own,tcp]
import http2 from "node:http2";
import { join } from "node:path";
import { diffSamples, sampleProcess } from "../../runtime/procstat.ts";
import { H2Session, type H2Stream } from "./grpc/h2/session.ts";
import { pssParts, rssParts } from "./proc-memory.ts";
import { TestResources } from "../../test/helpers.ts";

const BODY = 1039; // a 1,034-byte message and its 5-byte prefix, as in bench-mesh.ts

function serve(kind: string): void {
  if (kind === "tcp") {
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d) => void s.write(d) } });
    console.log(JSON.stringify({ ready: true, port: server.port }));
    return;
  }
  if (kind === "own") {
    // The sidecar's own HTTP/2 framing (grpc/h2/) over Bun.listen.
    const server = Bun.listen<{ h2: H2Session }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(sock) {
          sock.data = {
            h2: new H2Session(sock, {
              server: true,
              onStream(stream: H2Stream) {
                const chunks: Buffer[] = [];
                stream.owner = {
                  streamHeaders() {},
                  streamData(buf, start, end, endStream) {
                    if (end > start) chunks.push(buf.subarray(start, end));
                    if (!endStream) return;
                    stream.sendHeaders([[":status", "200"], ["content-type", "application/grpc"]], false);
                    stream.write(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
                    stream.sendHeaders([["grpc-status", "0"]], true);
                  },
                  streamReset() {},
                };
              },
            }),
          };
        },
        data: (sock, d) => sock.data.h2.onData(d),
        drain: (sock) => sock.data.h2.onSocketDrain(),
        close: (sock) => sock.data?.h2.onSocketClose(),
      },
    });
    console.log(JSON.stringify({ ready: true, port: server.port }));
    return;
  }
  const server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ ready: true, port: (server.address() as { port: number }).port })));
}

async function openLoop(call: () => Promise<void>, rate: number, seconds: number): Promise<void> {
  const total = Math.round(rate * seconds);
  const start = performance.now();
  let issued = 0;
  const pending = new Set<Promise<void>>();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      while (issued < total && start + (issued * 1000) / rate <= now) {
        issued++;
        const p = call();
        pending.add(p);
        void p.finally(() => pending.delete(p));
      }
      if (issued >= total) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  await Promise.all(pending);
}

async function client(kind: string, port: number): Promise<() => Promise<void>> {
  const body = Buffer.alloc(BODY, 7);
  body[0] = 0;
  body.writeUInt32BE(BODY - 5, 1);
  if (kind === "tcp") {
    const waiting: (() => void)[] = [];
    let got = 0;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, d) {
          got += d.length;
          while (got >= BODY) {
            got -= BODY;
            waiting.shift()?.();
          }
        },
      },
    });
    return () =>
      new Promise<void>((resolve) => {
        waiting.push(resolve);
        sock.write(body);
      });
  }
  if (kind === "own") {
    let h2!: H2Session;
    await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(sock) {
          h2 = new H2Session(sock, { server: false });
        },
        data: (_s, d) => h2.onData(d),
        drain: () => h2.onSocketDrain(),
        close: () => h2.onSocketClose(),
      },
    });
    const headers: [string, string][] = [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/bench.Echo/Unary"],
      [":authority", `127.0.0.1:${port}`],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
    ];
    return () =>
      new Promise<void>((resolve) => {
        const s = h2.request(headers, false);
        s.owner = {
          streamHeaders(_h, end) {
            if (end) resolve();
          },
          streamData(_buf, _start, _end, endStream) {
            if (endStream) resolve();
          },
          streamReset: () => resolve(),
        };
        s.write(body, true);
      });
  }
  const session = http2.connect(`http://127.0.0.1:${port}`);
  return () =>
    new Promise<void>((resolve) => {
      const req = session.request({ ":method": "POST", ":path": "/bench.Echo/Unary", "content-type": "application/grpc", te: "trailers" });
      req.on("response", () => {});
      req.on("data", () => {});
      req.on("trailers", () => {});
      req.on("close", () => resolve());
      req.end(body);
    });
}

/** The loaded server's resident memory: a floor for the sidecar's (bench-mesh.ts prints the same parts). */
function serverMemory(pid: number): string {
  const rss = rssParts(pid);
  return `RSS ${rss.rssMB.toFixed(1)} MB = ${rss.anonMB.toFixed(1)} anon + ${rss.fileMB.toFixed(1)} file-backed, PSS ${pssParts(pid).pssMB.toFixed(1)} MB`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--serve") return serve(argv[1]!);
  const opt = (name: string, def: number) => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : def;
  };
  const rate = opt("--rate", 1000);
  const seconds = opt("--seconds", 10);
  const warmup = opt("--warmup", 15);
  // The load generator's own 1 ms timer, alone, for subtracting from the client's figure.
  const idle = sampleProcess(process.pid);
  await openLoop(() => Promise.resolve(), rate, 3);
  const idleD = diffSamples(idle, sampleProcess(process.pid));
  const timerVcpu = idleD.cpuNs / 1e6 / idleD.wallMs;
  const res = new TestResources();
  try {
    console.log(`fixed rate ${rate} rps, ${BODY} B each way, ${seconds} s after ${warmup} s of warm-up; vCPU per 1k rps (the client's 1 ms load timer, ${((timerVcpu * 1000) / rate).toFixed(3)}, subtracted)`);
    const kinds = argv.includes("--kinds") ? argv[argv.indexOf("--kinds") + 1]!.split(",") : ["h2", "own", "tcp"];
    for (const kind of kinds) {
      const server = res.spawnBun([join(import.meta.dir, "bench-h2-floor.ts"), "--serve", kind]);
      const port = JSON.parse(await server.waitForLine(/"ready"/)).port as number;
      const call = await client(kind, port);
      await openLoop(call, rate, warmup);
      const s0 = sampleProcess(server.proc.pid);
      const c0 = sampleProcess(process.pid);
      await openLoop(call, rate, seconds);
      const s = diffSamples(s0, sampleProcess(server.proc.pid));
      const mem = serverMemory(server.proc.pid);
      const c = diffSamples(c0, sampleProcess(process.pid));
      const per1k = (d: { cpuNs: number; wallMs: number }) => d.cpuNs / 1e6 / d.wallMs / (rate / 1000);
      const label = kind === "h2" ? "node:http2 gRPC-shaped unary " : kind === "own" ? "own h2 (grpc/h2) gRPC unary  " : "bare TCP echo (Bun sockets)  ";
      console.log(`${label}  client ${(per1k(c) - (timerVcpu * 1000) / rate).toFixed(3)}   server ${per1k(s).toFixed(3)}   server ${mem}`);
    }
    console.log(`load average ${(await Bun.file("/proc/loadavg").text()).split(" ").slice(0, 3).join(" ")}`);
  } finally {
    await res.cleanup();
  }
  process.exit(0);
}

await main();
