// What one proxied call allocates in each sidecar: frontend app → frontend sidecar → greeter sidecar →
// echo app, 1 KB unary calls (bench-mesh's request), sidecars from source with JSC's garbage collector
// off (BUN_JSC_useGC=false), so nothing allocated during the measured calls is freed. A preload in each
// sidecar reads `bun:jsc` heapStats() and memoryUsage() when signalled, before and after N calls; the
// difference divided by N is printed per sidecar:
// - JS heap: heapCapacity (GC blocks holding cells, butterflies and small typed-array storage);
// - RSS growth (what memoryUsage() reports as current), which adds the native side: ArrayBuffers over
//   JSC's inline size, Bun's buffer per socket read, timers;
// - the objects made per call, by JSC type (the top --top of them).
// Both are what the call leaves for the collector; with GC on they are the churn between collections.
// Sequential calls (--concurrency 1 by default), after a warm-up so JIT tiers and caches settle; the
// access log on, as in bench-mesh.
//
//   bun mesh/sidecar/bench-alloc.ts [--calls 10000] [--warmup 3000] [--concurrency 1] [--top 15]
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import protobuf from "protobufjs";
import { connect } from "../../runtime/sdk/index.ts";
import { TestResources } from "../../test/helpers.ts";
import { ECHO_PROTO, startEchoApp, startSidecar, writeMeshYaml } from "./testdata/harness.ts";

interface Snapshot {
  heapCapacity: number;
  current: number;
  types: Record<string, number>;
}

// Runs inside each sidecar (--preload): writes a snapshot to <dir>/<pod>-<n>.json on each SIGUSR2.
const PROBE = `
import { heapStats, memoryUsage } from "bun:jsc";
import { writeFileSync } from "node:fs";
const pod = process.argv[process.argv.indexOf("--pod") + 1];
let n = 0;
process.on("SIGUSR2", () => {
  const h = heapStats();
  writeFileSync(process.env.ALLOC_PROBE_DIR + "/" + pod + "-" + n++ + ".json", JSON.stringify({ heapCapacity: h.heapCapacity, current: memoryUsage().current, types: h.objectTypeCounts }));
});
`;

function parse(argv: string[]): { calls: number; warmup: number; concurrency: number; top: number } {
  const o = { calls: 10_000, warmup: 3_000, concurrency: 1, top: 15 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]!.replace(/^--/, "");
    const v = Number(argv[i + 1]);
    if (!(key in o) || !Number.isInteger(v) || v < 1) throw new Error(`bench-alloc: bad option ${argv[i]} ${argv[i + 1]}`);
    o[key as keyof typeof o] = v;
  }
  return o;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  process.env.MESH_LOG_LEVEL ??= "warn";
  const res = new TestResources();
  try {
    const dir = res.scratchDir("bench-alloc-");
    const probeDir = join(dir, "snapshots");
    mkdirSync(probeDir);
    const probe = join(dir, "probe.ts");
    writeFileSync(probe, PROBE);
    const pods = (greeter: string) => [
      { name: "greeter", sidecar: { inbound: { host: "127.0.0.1", port: 0 } } },
      { name: "frontend", sidecar: { upstreams: [{ service: "meshtest.Echo", endpoints: [greeter] }] } },
    ];
    const config = writeMeshYaml(dir, pods("127.0.0.1:1"));
    // The access log on, as bench-mesh runs it by default (its lines are part of a call's cost).
    const env = { BUN_JSC_useGC: "false", ALLOC_PROBE_DIR: probeDir, MESH_ACCESS_LOG: "on", MESH_LOG_LEVEL: "info" };
    const flags = ["--preload", probe];
    const greeter = await startSidecar(res, config, "greeter", join(dir, "g", "app.sock"), env, [], flags);
    await startEchoApp(res, greeter.socket);
    writeMeshYaml(dir, pods(greeter.ready.inbound!));
    const frontend = await startSidecar(res, config, "frontend", join(dir, "f", "app.sock"), env, [], flags);
    const app = await connect({ socketPath: frontend.socket, reconnect: false });

    const Req = protobuf.loadSync(ECHO_PROTO).lookupType("meshtest.EchoRequest");
    const request = Req.encode(Req.fromObject({ text: "bench", padding: new Uint8Array(1024).fill(7) })).finish();
    const run = async (n: number) => {
      let started = 0;
      const worker = async () => {
        while (started++ < n) await app.unary("/meshtest.Echo/Unary", request, { timeoutMs: 5000 });
      };
      await Promise.all(Array.from({ length: o.concurrency }, worker));
    };
    const sidecars = { frontend: frontend.proc.proc.pid, greeter: greeter.proc.proc.pid };
    const snapshot = async (n: number): Promise<Record<string, Snapshot>> => {
      for (const pid of Object.values(sidecars)) process.kill(pid, "SIGUSR2");
      const read = (pod: string) => JSON.parse(readFileSync(join(probeDir, `${pod}-${n}.json`), "utf8")) as Snapshot;
      for (let i = 0; ; i++) {
        try {
          return { frontend: read("frontend"), greeter: read("greeter") };
        } catch (e) {
          if (i > 100) throw e;
          await Bun.sleep(20);
        }
      }
    };

    await run(o.warmup);
    const before = await snapshot(0);
    await run(o.calls);
    const after = await snapshot(1);
    console.log(`${o.calls} calls (concurrency ${o.concurrency}) after ${o.warmup} warm-up calls, ${request.byteLength} B requests, GC off in the sidecars, access log on`);
    for (const pod of ["frontend", "greeter"] as const) {
      const a = before[pod]!;
      const b = after[pod]!;
      const per = (x: number) => (x / o.calls / 1024).toFixed(2);
      console.log(`${pod.padEnd(8)} JS heap ${per(b.heapCapacity - a.heapCapacity)} KB per call, RSS growth ${per(b.current - a.current)} KB per call; objects per call:`);
      const rows = Object.keys(b.types)
        .map((k) => [k, ((b.types[k] ?? 0) - (a.types[k] ?? 0)) / o.calls] as const)
        .filter(([, d]) => d >= 0.05)
        .sort((x, y) => y[1] - x[1]);
      for (const [k, d] of rows.slice(0, o.top)) console.log(`  ${d.toFixed(2).padStart(7)} ${k}`);
    }
    await app.close(100).catch(() => undefined);
  } finally {
    await res.cleanup();
  }
}

await main();
process.exit(0);
