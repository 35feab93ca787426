// Issue 5's sidecar benchmark, the method mesh vendors publish: a fixed request rate (open loop), 1 KB
// payload, frontend→greeter through both sidecars against the same call made directly over gRPC.
// Reports p50/p90/p99 of both, the added p99, each sidecar's CPU per 1,000 rps (from /proc) and RSS.
// The CPU figure includes the JIT compiler threads, which are busy for the first ~15 s of traffic and
// then idle: their share is printed beside it, and --warmup 15 measures the steady state.
// RSS is printed with its parts: anonymous memory, and pages of the bun executable (file-backed,
// shared by every Bun process on the host). Beside it PSS (from /proc/<pid>/smaps_rollup): each shared
// page counted as 1/n for the n processes mapping it, so the executable's pages are split between the
// Bun processes running (here: this script, both sidecars, the echo app, the direct server) — what the
// sidecar costs the node. RSS stays the target figure (issue 5 says RSS). The RSS at the end is one
// moment of a heap that grows and is collected; the median and maximum of readings every 0.5 s over the
// measured windows are printed beside it.
// The sidecars run from the bundle `mesh up` runs (mesh/sidecar/bundle.ts), or with --sidecar source
// from main.ts.
// The paths are measured in alternating windows (--rounds of them each: direct, mesh, C proxies, direct,
// …), so a slow moment of the shared machine falls on all of them instead of making the added p99
// negative or doubling it; CPU is summed over each process's own windows.
// A third path, "via 2 C proxies" (--c-proxy on, the default), is this machine's floor for a sidecar's
// CPU: the same grpc-js client and load go through two bench/c/tcp-proxy.c processes chained in the
// sidecars' places (client → F → G → the direct grpc-js server), byte forwarders that make the same
// per-call syscalls as a sidecar (2 epoll waits, 2 recvs, 2 sends: under nested virtualisation ~45 % of
// a sidecar's CPU is those wakeups) and nothing else. Each sidecar's CPU is printed as a ratio to the two
// proxies' mean, over the run and per round (against the C proxies' window of the same round).
// A fourth path, "via 2 nginx gRPC proxies" (--nginx on; the default when nginx is installed, from
// Debian's nginx-light), is a production-grade peer measured in the same run: the same client and load
// through two single-process nginx (ngx_http_grpc_module, h2c both sides, buffered access log like the
// sidecars', mesh/sidecar/bench-nginx.ts) in the sidecars' places, in its own window after the C
// proxies'. Unlike the C forwarder it parses HTTP/2 and HPACK on both sides, as Envoy (Istio's 0.20) does;
// Envoy is not packaged for Debian. Each sidecar's CPU is printed as a ratio to the two nginx' mean too.
// The greeter nginx's server is direct-echo.ts on Node.js, which nginx can keep connections to (to
// the Bun one it cannot: oven-sh/bun#19152, see bench-nginx.ts). --nginx-access-log on|off (default: --access-log).
//
//   bun mesh/sidecar/bench-mesh.ts [--rate 1000] [--seconds 10] [--rounds 5] [--warmup 2]
//        [--transport auto|uds|shm] [--access-log on|off] [--tls on|off] [--sidecar bundle|source] [--smol]
//        [--sidecar-env K=V]... [--compare <dir>] [--compare-env K=V]... [--c-proxy on|off]
//        [--nginx on|off] [--nginx-access-log on|off] [--json]
// --smol runs the sidecars with `bun --smol` (smaller heap, more frequent GC).
// --sidecar-env K=V (repeatable) sets K=V in the sidecars' environment only (not the apps' or this process's).
// --compare <dir>: a paired run against another checkout of this repo (e.g. `git worktree add /tmp/old <commit>`
// with node_modules symlinked). A second greeter sidecar + echo app + frontend sidecar run from <dir> (its own
// bundle, or main.ts with --sidecar source; the same sidecar env), and each round measures direct, mesh (this
// tree), mesh (<dir>), C proxies, nginx — the two mesh windows swap order every round. This VM's phases move the absolute CPU
// figure ±10 % over tens of minutes, which hides 3-6 % effects of a change; in a paired run both trees share
// the phase. Printed after the usual lines (JSON: `compare`): each sidecar's CPU per 1k rps in both trees and
// the ratio this/compare, RSS median of both, added p99 of both.
// --compare-env K=V (repeatable) sets K=V in the compare tree's sidecars only: `--compare . --compare-env X=1` is a
// paired A/B of a setting on this tree.
import * as grpc from "@grpc/grpc-js";
import hdr from "hdr-histogram-js";
import { join, resolve } from "node:path";
import protobuf from "protobufjs";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { diffSamples, sampleProcess } from "../../runtime/procstat.ts";
import { connect } from "../../runtime/sdk/index.ts";
import { TestResources } from "../../test/helpers.ts";
import { buildC } from "../../bench/lib/build-c.ts";
import { buildSidecarBundle } from "./bundle.ts";
import { nginxVersion, resolveNginxFlag, startNginxPair, startNodeEchoServer } from "./bench-nginx.ts";
import { pssParts, rssParts } from "./proc-memory.ts";
import { sidecarProcessEnv } from "./process-env.ts";
import { issueCertificates } from "./certs.ts";
import { ECHO_APP, ECHO_PROTO, echoClient, type EchoClient, type RunningSidecar, SIDECAR_MAIN, startSidecar, writeMeshYaml } from "./testdata/harness.ts";

interface Opts {
  rate: number;
  seconds: number;
  rounds: number;
  warmup: number;
  transport: string;
  accessLog: boolean;
  tls: boolean;
  json: boolean;
  smol: boolean;
  bundle: boolean;
  sidecarEnv: Record<string, string>;
  compare?: string;
  /** Set in the --compare tree's sidecars only, on top of sidecarEnv (an A/B of a setting on one tree). */
  compareEnv: Record<string, string>;
  /** The "via 2 C proxies" path, the floor a sidecar's CPU is judged against. */
  cProxy: boolean;
  /** The "via 2 nginx gRPC proxies" path, a production-grade peer (undefined: on when nginx is installed). */
  nginx?: "on" | "off";
  /** nginx's access log (undefined: as --access-log). */
  nginxAccessLog?: boolean;
}

function parse(argv: string[]): Opts {
  const o: Opts = { rate: 1000, seconds: 10, rounds: 5, warmup: 2, transport: "auto", accessLog: true, tls: false, json: false, smol: false, bundle: true, sidecarEnv: {}, compareEnv: {}, cProxy: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--rate") o.rate = Number(v());
    else if (a === "--seconds") o.seconds = Number(v());
    else if (a === "--rounds") o.rounds = Number(v());
    else if (a === "--warmup") o.warmup = Number(v());
    else if (a === "--transport") o.transport = v();
    else if (a === "--access-log") o.accessLog = v() !== "off";
    else if (a === "--tls") o.tls = v() === "on";
    else if (a === "--json") o.json = true;
    else if (a === "--smol") o.smol = true;
    else if (a === "--compare") o.compare = resolve(v());
    else if (a === "--sidecar-env" || a === "--compare-env") {
      const x = v();
      const eq = x.indexOf("=");
      if (eq <= 0) throw new Error(`${a} ${x}: expected KEY=VALUE`);
      (a === "--sidecar-env" ? o.sidecarEnv : o.compareEnv)[x.slice(0, eq)] = x.slice(eq + 1);
    }
    else if (a === "--c-proxy" || a === "--nginx" || a === "--nginx-access-log") {
      const x = v();
      if (x !== "on" && x !== "off") throw new Error(`${a} ${x}: expected on or off`);
      if (a === "--c-proxy") o.cProxy = x === "on";
      else if (a === "--nginx") o.nginx = x;
      else o.nginxAccessLog = x === "on";
    }
    else if (a === "--sidecar") {
      const x = v();
      if (x !== "bundle" && x !== "source") throw new Error(`--sidecar ${x}: expected bundle or source`);
      o.bundle = x === "bundle";
    }
    else throw new Error(`unknown argument ${a}`);
  }
  if (Object.keys(o.compareEnv).length && !o.compare) throw new Error("--compare-env needs --compare <dir> (use --compare . to compare a setting on this tree)");
  if (o.compare && !existsSync(join(o.compare, "mesh", "sidecar", "main.ts"))) throw new Error(`--compare ${o.compare}: not a checkout of this repo (no mesh/sidecar/main.ts)`);
  if (!(o.rate > 0) || !(o.seconds > 0) || !(o.warmup >= 0)) throw new Error("--rate, --seconds must be positive, --warmup >= 0");
  if (!Number.isInteger(o.rounds) || o.rounds < 1 || o.rate * (o.seconds / o.rounds) < 1) throw new Error("--rounds must be a whole number >= 1, with at least one call per window");
  return o;
}

interface RunResult {
  sent: number;
  ok: number;
  errors: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  achievedRps: number;
}

type Histogram = ReturnType<typeof hdr.build>;

/** One path's windows added up: latencies, counts, wall time. */
class PathTotals {
  readonly h: Histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  sent = 0;
  ok = 0;
  errors = 0;
  wallSec = 0;

  add(w: WindowCounts): void {
    this.sent += w.sent;
    this.ok += w.ok;
    this.errors += w.errors;
    this.wallSec += w.wallSec;
  }

  result(): RunResult {
    const r: RunResult = {
      sent: this.sent,
      ok: this.ok,
      errors: this.errors,
      p50Us: this.h.getValueAtPercentile(50),
      p90Us: this.h.getValueAtPercentile(90),
      p99Us: this.h.getValueAtPercentile(99),
      maxUs: this.h.maxValue,
      achievedRps: this.sent / this.wallSec,
    };
    this.h.destroy();
    return r;
  }
}

interface WindowCounts {
  sent: number;
  ok: number;
  errors: number;
  wallSec: number;
}

/**
 * Open loop: request i is due at start + i/rate; latency runs from that intended time, so a stall shows
 * up as latency instead of a lower rate (no coordinated omission). Latencies go into `h` when given.
 */
async function openLoop(call: () => Promise<unknown>, rate: number, seconds: number, h?: Histogram): Promise<WindowCounts> {
  const interval = 1000 / rate;
  const total = Math.round(rate * seconds);
  const start = performance.now() + 5;
  let issued = 0;
  let ok = 0;
  let errors = 0;
  const inflight = new Set<Promise<void>>();
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (issued < total && start + issued * interval <= now) {
        const intended = start + issued * interval;
        issued++;
        const p = call().then(
          () => {
            ok++;
            h?.recordValue(Math.max(1, Math.round((performance.now() - intended) * 1000)));
          },
          () => {
            errors++;
          },
        );
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
      }
      if (issued >= total) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(tick, 1);
  });
  await Promise.all(inflight);
  return { sent: issued, ok, errors, wallSec: (performance.now() - start) / 1000 };
}

/** Run time (ns) of each JIT compiler thread of `pid` (JSC names them "JITWorker"), by thread id. */
function jitThreads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      if (!readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").startsWith("JIT")) continue;
      out.set(tid, Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]));
    } catch {
      // the thread exited between the listing and the read
    }
  }
  return out;
}

/** JIT compiler CPU (ns) between two readings (a thread that exited in between counts as 0: a lower bound). */
function jitNs(before: Map<string, number>, after: Map<string, number>): number {
  let ns = 0;
  for (const [tid, v] of after) ns += v - (before.get(tid) ?? 0);
  return ns;
}

/** CPU and JIT-thread time of one process, summed over the windows between begin() and end(). */
class CpuTotals {
  /** vCPU per 1k rps of each window, in order (end() given the window's achieved rate). */
  readonly windows: number[] = [];
  private cpuNs = 0;
  private jitNsSum = 0;
  private wallMs = 0;
  private before?: { sample: ReturnType<typeof sampleProcess>; jit: Map<string, number> };

  constructor(private readonly pid: number) {}

  begin(): void {
    this.before = { sample: sampleProcess(this.pid), jit: jitThreads(this.pid) };
  }

  end(achievedRps?: number): void {
    const b = this.before!;
    const d = diffSamples(b.sample, sampleProcess(this.pid));
    if (achievedRps) this.windows.push(d.cpuNs / 1e6 / d.wallMs / (achievedRps / 1000));
    this.cpuNs += d.cpuNs;
    this.wallMs += d.wallMs;
    this.jitNsSum += jitNs(b.jit, jitThreads(this.pid));
  }

  /** Wall-clock seconds of the windows. */
  get wallSec(): number {
    return this.wallMs / 1000;
  }

  /** CPUs' worth used over the windows. */
  vcpu(): number {
    return this.cpuNs / 1e6 / this.wallMs;
  }

  jitVcpu(): number {
    return this.jitNsSum / 1e6 / this.wallMs;
  }
}

/** Two proxies chained in the sidecars' places (C forwarders, nginx): client → frontend → greeter → the direct server. */
interface RefPair {
  client: EchoClient;
  pids: { frontend: number; greeter: number };
}

/** A reference pair's figures over its windows: each proxy's vCPU per 1k rps, and the two's mean (what a sidecar is divided by), over the run and per round. */
interface RefFigures {
  result: RunResult;
  per1k: { frontend: number; greeter: number; mean: number };
  windows: { frontend: number[]; greeter: number[] };
  meanByRound: number[];
}

/** A reference path: its pair's client and the two proxies' CPU and the calls' latencies over its own windows. */
class RefPath {
  readonly cpu: { frontend: CpuTotals; greeter: CpuTotals };
  readonly totals = new PathTotals();

  constructor(readonly pair: RefPair, readonly call: () => Promise<unknown>) {
    this.cpu = { frontend: new CpuTotals(pair.pids.frontend), greeter: new CpuTotals(pair.pids.greeter) };
  }

  /** Once, after the last window (it releases the latency histogram). */
  figures(): RefFigures {
    const result = this.totals.result();
    const perK = result.achievedRps / 1000;
    const frontend = this.cpu.frontend.vcpu() / perK;
    const greeter = this.cpu.greeter.vcpu() / perK;
    const w = { frontend: this.cpu.frontend.windows, greeter: this.cpu.greeter.windows };
    return { result, per1k: { frontend, greeter, mean: (frontend + greeter) / 2 }, windows: w, meanByRound: w.frontend.map((x, i) => (x + w.greeter[i]!) / 2) };
  }
}

/** "min–max (median m)" of a few figures. */
function spread(xs: number[], digits: number): string {
  if (xs.length === 0) return "n/a";
  const v = [...xs].sort((a, b) => a - b);
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return `${v[0]!.toFixed(digits)}–${v[v.length - 1]!.toFixed(digits)} (median ${median.toFixed(digits)})`;
}

/** µs the sidecar's shm sessions have spent spinning, from its /metrics (0 when none is on shm). */
async function spinUs(admin: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  let us = 0;
  for (const m of text.matchAll(/^mesh_transport_stat\{[^}]*stat="spinUs"[^}]*\} (\S+)$/gm)) us += Number(m[1]);
  return us;
}

/** RSS readings of some processes every 0.5 s while running (MB), for their median and maximum. */
class RssSampler {
  private readonly readings = new Map<number, number[]>();
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly pids: number[]) {}

  start(): void {
    const read = () => {
      for (const pid of this.pids) {
        const { anonMB, fileMB } = rssParts(pid);
        const list = this.readings.get(pid) ?? [];
        list.push(anonMB + fileMB);
        this.readings.set(pid, list);
      }
    };
    read();
    this.timer = setInterval(read, 500);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  figures(pid: number): { rssMedianMB: number; rssMaxMB: number; rssReadings: number } {
    const list = [...(this.readings.get(pid) ?? [])].sort((a, b) => a - b);
    return { rssMedianMB: list[Math.floor(list.length / 2)] ?? NaN, rssMaxMB: list[list.length - 1] ?? NaN, rssReadings: list.length };
  }
}

/** Bun processes of this user mapping the same executable as `pid` (they share its file-backed pages). */
function bunProcessesLike(pid: number): number {
  let exe = "";
  try {
    exe = readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return NaN;
  }
  let n = 0;
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readlinkSync(`/proc/${d}/exe`) === exe) n++;
    } catch {
      // gone, or not ours
    }
  }
  return n;
}

type Pods = { name: string; sidecar: Record<string, unknown> }[];

/** One tree's mesh path: greeter sidecar + echo app + frontend sidecar, and an SDK client of the frontend. */
interface MeshPair {
  greeter: RunningSidecar;
  frontend: RunningSidecar;
  app: Awaited<ReturnType<typeof connect>>;
  pids: { greeter: number; frontend: number };
}

/**
 * Starts a mesh pair in `dir` (its mesh.yaml and app sockets) from `entry` (a sidecar bundle or main.ts)
 * and `echoApp` (a tree's testdata/echo-app.ts, started as the harness's startEchoApp does).
 */
async function startMeshPair(
  res: TestResources,
  p: { dir: string; entry: string; echoApp: string; pods: (greeter: string) => Pods; env: Record<string, string>; sidecarEnv: Record<string, string>; flags: (name: string) => string[]; transport: string },
): Promise<MeshPair> {
  const config = writeMeshYaml(p.dir, p.pods("127.0.0.1:1"));
  const greeter = await startSidecar(res, config, "greeter", join(p.dir, "g", "app.sock"), p.sidecarEnv, [], p.flags("greeter"), p.entry);
  const echo = res.spawnBun([p.echoApp], { env: { MESH_SOCKET: greeter.socket, ...p.env } });
  await echo.waitForLine(/"event":"app-ready"/);
  writeMeshYaml(p.dir, p.pods(greeter.ready.inbound!));
  const frontend = await startSidecar(res, config, "frontend", join(p.dir, "f", "app.sock"), p.sidecarEnv, [], p.flags("frontend"), p.entry);
  const app = await connect({ socketPath: frontend.socket, transport: p.transport === "auto" ? undefined : (p.transport as "uds"), reconnect: false });
  return { greeter, frontend, app, pids: { greeter: greeter.proc.proc.pid, frontend: frontend.proc.proc.pid } };
}

/** The sidecar program of another checkout: its own bundle (built by its bundle.ts, in a process of its own) or its main.ts. */
function compareEntry(tree: string, bundle: boolean, outDir: string): string {
  if (!bundle) return join(tree, "mesh", "sidecar", "main.ts");
  const r = Bun.spawnSync([process.execPath, join(tree, "mesh", "sidecar", "bundle.ts"), outDir], { cwd: tree, stdout: "pipe", stderr: "pipe" });
  const path = r.stdout.toString().trim().split("\n").pop() ?? "";
  if (r.exitCode !== 0 || !existsSync(path)) throw new Error(`--compare ${tree}: building its bundle failed: ${r.stderr.toString().trim()}`);
  return path;
}

/** The short commit hash of a checkout's HEAD, for the header ("" when it is not a git checkout). */
function treeCommit(tree: string): string {
  const r = Bun.spawnSync(["git", "-C", tree, "rev-parse", "--short", "HEAD"], { stdout: "pipe", stderr: "ignore" });
  return r.exitCode === 0 ? r.stdout.toString().trim() : "";
}

async function main(): Promise<void> {
  let o: Opts;
  try {
    o = parse(process.argv.slice(2));
  } catch (e) {
    console.error(`bench-mesh: ${(e as Error).message}\nusage: bun mesh/sidecar/bench-mesh.ts [--rate 1000] [--seconds 10] [--rounds 5] [--warmup 2] [--transport auto|uds|shm] [--access-log on|off] [--tls on|off] [--sidecar bundle|source] [--smol] [--sidecar-env K=V]... [--compare <dir>] [--compare-env K=V]... [--c-proxy on|off] [--nginx on|off] [--nginx-access-log on|off] [--json]`);
    process.exit(2);
  }
  let nginxOn: boolean;
  try {
    const n = resolveNginxFlag(o.nginx);
    nginxOn = n.on;
    if (n.note) console.error(n.note);
  } catch (e) {
    console.error(`bench-mesh: ${(e as Error).message}`);
    process.exit(2);
  }
  const nginxAccessLog = o.nginxAccessLog ?? o.accessLog;
  process.env.MESH_LOG_LEVEL ??= "warn";
  const res = new TestResources();
  // Stopped by a signal (SIGTERM from a job runner, SIGINT outside a terminal's process group): the
  // sidecars, apps and scratch files go too.
  const onSignal = (signal: NodeJS.Signals) => {
    void res.cleanup().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const dir = res.scratchDir("bench-mesh-");
    const env = { MESH_ACCESS_LOG: o.accessLog ? "on" : "off", MESH_TRANSPORT: o.transport === "auto" ? "" : o.transport, MESH_LOG_LEVEL: o.accessLog ? "info" : "warn" };
    let tls: Record<string, Record<string, string>> = {};
    if (o.tls) {
      const certs = join(dir, "certs");
      await issueCertificates({ dir: certs, pods: ["greeter", "frontend"], days: 1, sans: [], newCa: true });
      const files = (p: string) => ({ ca: join(certs, "ca.pem"), cert: join(certs, `${p}.pem`), key: join(certs, `${p}-key.pem`) });
      tls = { greeter: files("greeter"), frontend: files("frontend") };
    }
    const pods = (greeter: string): Pods => [
      { name: "greeter", sidecar: { inbound: { host: "127.0.0.1", port: 0 }, ...(o.tls ? { tls: tls.greeter } : {}) } },
      { name: "frontend", sidecar: { ...(o.tls ? { tls: tls.frontend } : {}), upstreams: [{ service: "meshtest.Echo", endpoints: [greeter] }] } },
    ];
    // MESH_BENCH_PROFILE=<dir>: CPU profiles (markdown) of both sidecars, written when they exit.
    const prof = process.env.MESH_BENCH_PROFILE;
    const flags = (name: string) => [
      ...(o.smol ? ["--smol"] : []),
      ...(prof ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${prof}`, `--cpu-prof-name=${name}.md`] : []),
    ];
    const entry = o.bundle ? await buildSidecarBundle(join(dir, "bundle")) : SIDECAR_MAIN;
    // As `mesh up` starts them (process-env.ts), then what --sidecar-env says; the header prints both.
    Object.assign(o.sidecarEnv, { ...sidecarProcessEnv({ ...process.env, ...env, ...o.sidecarEnv }), ...o.sidecarEnv });
    const sidecarEnv = { ...env, ...o.sidecarEnv };
    const pair = await startMeshPair(res, { dir, entry, echoApp: ECHO_APP, pods, env, sidecarEnv, flags, transport: o.transport });
    const { greeter, frontend, app } = pair;
    // --compare: the same pair from the other tree, in a directory of its own (mesh.yaml, sockets).
    let cmp: (MeshPair & { tree: string; commit: string }) | undefined;
    if (o.compare) {
      const cdir = join(dir, "compare");
      mkdirSync(cdir);
      const centry = compareEntry(o.compare, o.bundle, join(cdir, "bundle"));
      const echoApp = join(o.compare, "mesh", "sidecar", "testdata", "echo-app.ts");
      const cflags = (name: string) => flags(`compare-${name}`);
      cmp = { ...(await startMeshPair(res, { dir: cdir, entry: centry, echoApp, pods, env, sidecarEnv: { ...sidecarEnv, ...o.compareEnv }, flags: cflags, transport: o.transport })), tree: o.compare, commit: treeCommit(o.compare) };
    }

    const direct = res.spawnBun([join(import.meta.dir, "testdata", "direct-echo.ts")]);
    const address = JSON.parse(await direct.waitForLine(/direct-ready/)).address as string;
    const dclient = echoClient(address);
    // --c-proxy: two C forwarders in the sidecars' places, client → F → G → the same direct server
    // (started G first: F needs its port). res tracks them, so they go with the rest on any exit.
    let cproxy: RefPair | undefined;
    if (o.cProxy) {
      let exe: string;
      try {
        exe = buildC("tcp-proxy");
      } catch (e) {
        throw new Error(`building the C proxy reference (bench/c/tcp-proxy.c) failed; --c-proxy off runs without it: ${(e as Error).message}`);
      }
      const startProxy = async (upstreamHost: string, upstreamPort: string) => {
        const p = res.spawn([exe, upstreamHost, upstreamPort]);
        const port = (JSON.parse(await p.waitForLine(/"ready":true/)) as { port: number }).port;
        return { pid: p.proc.pid, port };
      };
      const colon = address.lastIndexOf(":");
      const g = await startProxy(address.slice(0, colon), address.slice(colon + 1));
      const f = await startProxy("127.0.0.1", String(g.port));
      cproxy = { client: echoClient(`127.0.0.1:${f.port}`), pids: { frontend: f.pid, greeter: g.pid } };
    }
    // --nginx: two nginx gRPC proxies the same way (bench-nginx.ts); res tracks them too.
    let nginx: RefPair | undefined;
    let nginxServer = "";
    let nginxCaveat: string | undefined;
    if (nginxOn) {
      // Behind the greeter nginx: the direct server's code on Node.js, which nginx can keep connections to
      // (bench-nginx.ts); the Bun one only where there is no node.
      const nodeServer = await startNodeEchoServer(res);
      const n = await startNginxPair(res, { server: nodeServer ?? address, serverOnBun: nodeServer === undefined, accessLog: nginxAccessLog });
      nginx = { client: echoClient(`127.0.0.1:${n.frontend.port}`), pids: { frontend: n.frontend.pid, greeter: n.greeter.pid } };
      nginxServer = nodeServer ? "grpc-js on Node.js" : "grpc-js on Bun";
      nginxCaveat = n.caveat;
    }

    const root = protobuf.loadSync(ECHO_PROTO);
    const Req = root.lookupType("meshtest.EchoRequest");
    const padding = new Uint8Array(1024).fill(7);
    const reqBytes = Req.encode(Req.fromObject({ text: "bench", padding })).finish();
    const viaMesh = () => app.unary("/meshtest.Echo/Unary", reqBytes, { timeoutMs: 5000 });
    const viaCompare = () => cmp!.app.unary("/meshtest.Echo/Unary", reqBytes, { timeoutMs: 5000 });
    const viaGrpcJs = (client: EchoClient) => () =>
      new Promise<void>((resolve, reject) =>
        client.Unary({ text: "bench", padding }, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e: Error | null) => (e ? reject(e) : resolve())),
      );
    const viaDirect = viaGrpcJs(dclient);
    const cPath = cproxy && new RefPath(cproxy, viaGrpcJs(cproxy.client));
    const nginxPath = nginx && new RefPath(nginx, viaGrpcJs(nginx.client));

    // Warm the paths (JIT, connections), then measure each at the same fixed rate, in alternating
    // windows. CPU is counted over each process's own windows only.
    await openLoop(viaDirect, o.rate, o.warmup);
    await openLoop(viaMesh, o.rate, o.warmup);
    if (cmp) await openLoop(viaCompare, o.rate, o.warmup);
    // The C proxies and nginx have no JIT, and the client and server code is the direct path's, warm
    // already: a short warm-up only opens the channel (and fills nginx's upstream keepalive cache).
    for (const r of [cPath, nginxPath]) if (r) await openLoop(r.call, o.rate, Math.min(o.warmup, 2));
    const pids = pair.pids;
    const cpu = { direct: new CpuTotals(direct.proc.pid), greeter: new CpuTotals(pids.greeter), frontend: new CpuTotals(pids.frontend) };
    const cmpCpu = cmp && { greeter: new CpuTotals(cmp.pids.greeter), frontend: new CpuTotals(cmp.pids.frontend) };
    const cmpTotals = cmp && new PathTotals();
    const spinBefore = { frontend: await spinUs(frontend.admin), greeter: await spinUs(greeter.admin) };
    const directTotals = new PathTotals();
    const meshTotals = new PathTotals();
    const windowSec = o.seconds / o.rounds;
    const rssSampler = new RssSampler([pids.greeter, pids.frontend, ...(cmp ? [cmp.pids.greeter, cmp.pids.frontend] : [])]);
    rssSampler.start();
    /** One window of calls through a tree's mesh pair, its two sidecars' CPU counted over it. */
    const pairWindow = async (sidecars: { greeter: CpuTotals; frontend: CpuTotals }, totals: PathTotals, call: () => Promise<unknown>) => {
      sidecars.greeter.begin();
      sidecars.frontend.begin();
      const w = await openLoop(call, o.rate, windowSec, totals.h);
      totals.add(w);
      sidecars.greeter.end(w.sent / w.wallSec);
      sidecars.frontend.end(w.sent / w.wallSec);
    };
    const meshWindow = () => pairWindow(cpu, meshTotals, viaMesh);
    const compareWindow = () => pairWindow(cmpCpu!, cmpTotals!, viaCompare);
    const refWindow = (r: RefPath) => pairWindow(r.cpu, r.totals, r.call);
    for (let round = 0; round < o.rounds; round++) {
      cpu.direct.begin();
      const w = await openLoop(viaDirect, o.rate, windowSec, directTotals.h);
      directTotals.add(w);
      cpu.direct.end(w.sent / w.wallSec);
      // With --compare, the two trees' mesh windows swap order every round (neither always follows direct).
      if (cmp && round % 2 === 1) {
        await compareWindow();
        await meshWindow();
      } else {
        await meshWindow();
        if (cmp) await compareWindow();
      }
      if (cPath) await refWindow(cPath);
      if (nginxPath) await refWindow(nginxPath);
    }
    rssSampler.stop();
    const spinAfter = { frontend: await spinUs(frontend.admin), greeter: await spinUs(greeter.admin) };
    const directRes = directTotals.result();
    const meshRes = meshTotals.result();
    const cmpRes = cmpTotals?.result();
    const cFig = cPath?.figures();
    const nginxFig = nginxPath?.figures();
    const directServerVcpuPer1k = cpu.direct.vcpu() / (directRes.achievedRps / 1000);
    const parts = { greeter: rssParts(pids.greeter), frontend: rssParts(pids.frontend) };
    const pss = { greeter: pssParts(pids.greeter), frontend: pssParts(pids.frontend) };
    const bunSharers = bunProcessesLike(pids.frontend);
    const side = (k: "greeter" | "frontend") => {
      const vcpu = cpu[k].vcpu();
      const perK = meshRes.achievedRps / 1000;
      const jitVcpu = cpu[k].jitVcpu();
      /** This sidecar against a reference pair's mean, over the run and per round against the pair's window of the same round. */
      const against = (f: RefFigures) => ({ run: vcpu / perK / f.per1k.mean, byRound: cpu[k].windows.map((x, i) => x / f.meanByRound[i]!) });
      const vsC = cFig && against(cFig);
      const vsNginx = nginxFig && against(nginxFig);
      return {
        vcpu,
        vcpuPer1kRps: vcpu / perK,
        /**
         * Against the direct grpc-js server in the same run: the one peer figure measured beside it, so a
         * slow or fast phase of the host shows in both (this VM's phases move the absolute figure ±10 %).
         */
        vsDirectServer: vcpu / perK / directServerVcpuPer1k,
        /**
         * Each window's figure (the spread is this VM's noise), and each round's ratio to the direct
         * server's window of the same round (a paired figure: the two windows are seconds apart).
         */
        windowsVcpuPer1kRps: cpu[k].windows,
        vsDirectServerByRound: cpu[k].windows.map((x, i) => x / cpu.direct.windows[i]!),
        /**
         * Against the two C proxies' mean (the floor of a forwarder's wakeups on this machine), over the
         * run and per round against their window of the same round. Absent with --c-proxy off.
         */
        ...(vsC ? { vsCProxy: vsC.run, vsCProxyByRound: vsC.byRound } : {}),
        /** Against the two nginx gRPC proxies' mean, the same way. Absent with --nginx off. */
        ...(vsNginx ? { vsNginx: vsNginx.run, vsNginxByRound: vsNginx.byRound } : {}),
        jitVcpuPer1kRps: jitVcpu / perK,
        /** Spinning on the shm ring toward the app (0 on uds); only the mesh windows have calls to wait for. */
        spinVcpuPer1kRps: (spinAfter[k] - spinBefore[k]) / 1e6 / cpu[k].wallSec / perK,
        rssMB: sampleProcess(pids[k]).rssBytes / 1048576,
        rssAnonMB: parts[k].anonMB,
        rssFileMB: parts[k].fileMB,
        ...rssSampler.figures(pids[k]),
        ...pss[k],
        heapUsedMB: heaps[k],
      };
    };
    const status = (await (await fetch(`${frontend.admin}/status`)).json()) as { transport: string };
    const heapMB = async (admin: string) => {
      const m = /^mesh_process_heap_bytes\{kind="used"[^}]*\} (\d+)/m.exec(await (await fetch(`${admin}/metrics`)).text());
      return m ? Number(m[1]) / 1048576 : NaN;
    };
    const heaps = { frontend: await heapMB(frontend.admin), greeter: await heapMB(greeter.admin) };
    /** --compare: this tree's figures beside the other tree's, measured in the same rounds. */
    const compareFigures = () => {
      const c = cmp!;
      const r = cmpRes!;
      const both = (k: "greeter" | "frontend") => {
        const thisPer1k = cpu[k].vcpu() / (meshRes.achievedRps / 1000);
        const comparePer1k = cmpCpu![k].vcpu() / (r.achievedRps / 1000);
        return {
          thisVcpuPer1kRps: thisPer1k,
          compareVcpuPer1kRps: comparePer1k,
          /** this tree / the other tree: below 1 means this tree uses less CPU. */
          ratio: thisPer1k / comparePer1k,
          thisRssMedianMB: rssSampler.figures(pids[k]).rssMedianMB,
          compareRssMedianMB: rssSampler.figures(c.pids[k]).rssMedianMB,
        };
      };
      return {
        dir: c.tree,
        commit: c.commit,
        env: o.compareEnv,
        mesh: r,
        this_added_p99_us: meshRes.p99Us - directRes.p99Us,
        compare_added_p99_us: r.p99Us - directRes.p99Us,
        sidecars: { frontend: both("frontend"), greeter: both("greeter") },
      };
    };
    const result = {
      rate: o.rate,
      seconds: o.seconds,
      rounds: o.rounds,
      payload_bytes: reqBytes.byteLength,
      transport: status.transport,
      access_log: o.accessLog,
      tls: o.tls,
      sidecar_program: o.bundle ? "bundle" : "source",
      direct: directRes,
      mesh: meshRes,
      added_p50_us: meshRes.p50Us - directRes.p50Us,
      added_p99_us: meshRes.p99Us - directRes.p99Us,
      sidecars: { frontend: side("frontend"), greeter: side("greeter") },
      direct_grpc_server_vcpu_per_1k_rps: directServerVcpuPer1k,
      /** --c-proxy on: the "via 2 C proxies" path's latencies, and each proxy's CPU (absent with --c-proxy off). */
      ...(cFig ? { cproxy: cFig.result, c_proxy_vcpu_per_1k_rps: cFig.per1k, c_proxy_windows_vcpu_per_1k_rps: cFig.windows } : {}),
      /** --nginx on: the "via 2 nginx gRPC proxies" path, the same figures (absent with --nginx off). */
      ...(nginxFig
        ? {
            nginx: nginxFig.result,
            nginx_vcpu_per_1k_rps: nginxFig.per1k,
            nginx_windows_vcpu_per_1k_rps: nginxFig.windows,
            nginx_version: nginxVersion(),
            nginx_access_log: nginxAccessLog,
            /** The grpc-js server behind the greeter nginx (on Node.js unless this machine has no node). */
            nginx_server: nginxServer,
            /** false: the greeter nginx connects per call (no node: oven-sh/bun#19152), an upper bound on its CPU. */
            nginx_greeter_upstream_keepalive: nginxCaveat === undefined,
          }
        : {}),
      load: (await Bun.file("/proc/loadavg").text()).split(" ").slice(0, 3).join(" "),
      /** Processes running the same bun executable when PSS was read (its file pages are split between them). */
      bun_processes_sharing_executable: bunSharers,
      cpus: navigator.hardwareConcurrency,
      ...(cmp && cmpCpu && cmpRes ? { compare: compareFigures() } : {}),
    };
    if (o.json) {
      console.log(JSON.stringify(result));
    } else {
      const f = (us: number) => `${(us / 1000).toFixed(3)} ms`;
      console.log(`fixed rate ${o.rate} rps for ${o.seconds} s per path in ${o.rounds} alternating windows, ${reqBytes.byteLength} B requests, app↔sidecar transport ${status.transport}, access log ${o.accessLog ? "on" : "off"}, mTLS ${o.tls ? "on" : "off"}, sidecars from ${o.bundle ? "the bundle" : "source"}${o.smol ? ", bun --smol" : ""}${Object.keys(o.sidecarEnv).length ? `, sidecar env ${Object.entries(o.sidecarEnv).map(([k, x]) => `${k}=${x}`).join(" ")}` : ""}, ${result.cpus} CPUs`);
      console.log(`direct gRPC      p50 ${f(directRes.p50Us)}  p90 ${f(directRes.p90Us)}  p99 ${f(directRes.p99Us)}  max ${f(directRes.maxUs)}  ok ${directRes.ok}/${directRes.sent}`);
      console.log(`via 2 sidecars   p50 ${f(meshRes.p50Us)}  p90 ${f(meshRes.p90Us)}  p99 ${f(meshRes.p99Us)}  max ${f(meshRes.maxUs)}  ok ${meshRes.ok}/${meshRes.sent}`);
      const latency = (label: string, r: RunResult) => console.log(`${label.padEnd(17)}p50 ${f(r.p50Us)}  p90 ${f(r.p90Us)}  p99 ${f(r.p99Us)}  max ${f(r.maxUs)}  ok ${r.ok}/${r.sent}`);
      if (cFig) latency("via 2 C proxies", cFig.result);
      if (nginxFig) latency("via 2 nginx", nginxFig.result);
      console.log(`added latency    p50 ${f(result.added_p50_us)}  p99 ${f(result.added_p99_us)}   (target: added p99 <= 1 ms)`);
      console.log(`reference: the direct grpc-js server process alone used ${directServerVcpuPer1k.toFixed(3)} vCPU per 1k rps; load average ${result.load}`);
      const reference = (label: string, r: RefFigures) =>
        console.log(
          `reference: ${label} in the sidecars' places used frontend ${r.per1k.frontend.toFixed(3)}, greeter ${r.per1k.greeter.toFixed(3)}, mean ${r.per1k.mean.toFixed(3)} vCPU per 1k rps; ` +
            `per window frontend ${spread(r.windows.frontend, 3)}, greeter ${spread(r.windows.greeter, 3)}`,
        );
      if (cFig) reference("2 C epoll proxies (bench/c/tcp-proxy.c)", cFig);
      if (nginxFig) {
        reference(`2 nginx gRPC proxies (${result.nginx_version}, access log ${nginxAccessLog ? "on" : "off"}, in front of ${nginxServer})`, nginxFig);
        if (nginxCaveat) console.log(`           (${nginxCaveat})`);
      }
      const vs = (label: string, run: number | undefined, byRound: number[] | undefined) =>
        run !== undefined && byRound ? `                  against ${label} mean: ${run.toFixed(2)}× over the run; against their window of the same round ${spread(byRound, 2)}×\n` : "";
      for (const k of ["frontend", "greeter"] as const) {
        const s = result.sidecars[k];
        console.log(
          `${k.padEnd(8)} sidecar  ${s.vcpu.toFixed(3)} vCPU = ${s.vcpuPer1kRps.toFixed(3)} vCPU per 1k rps (target <= 0.1; Istio 0.20, Dapr 0.48) = ${s.vsDirectServer.toFixed(2)}× the direct grpc-js server's, of which JIT compiler ${s.jitVcpuPer1kRps.toFixed(3)}, spinning ${s.spinVcpuPer1kRps.toFixed(4)}   ` +
            `RSS ${s.rssMB.toFixed(1)} MB (target <= 60) = ${s.rssAnonMB.toFixed(1)} anon + ${s.rssFileMB.toFixed(1)} file-backed (the bun executable), JS heap used ${s.heapUsedMB.toFixed(1)} MB\n` +
            `                  CPU per window ${spread(s.windowsVcpuPer1kRps, 3)} vCPU per 1k rps; against the direct server's window of the same round ${spread(s.vsDirectServerByRound, 2)}×\n` +
            vs("the C proxies'", s.vsCProxy, s.vsCProxyByRound) +
            vs("the nginx proxies'", s.vsNginx, s.vsNginxByRound) +
            `                  RSS over the measured windows: median ${s.rssMedianMB.toFixed(1)} MB, max ${s.rssMaxMB.toFixed(1)} MB (${s.rssReadings} readings)\n` +
            `                  PSS ${s.pssMB.toFixed(1)} MB = ${s.pssAnonMB.toFixed(1)} anon + ${s.pssFileMB.toFixed(1)} file-backed + ${s.pssShmemMB.toFixed(1)} shmem (file pages split between ${result.bun_processes_sharing_executable} bun processes)`,
        );
      }
      const c = result.compare;
      if (c) {
        console.log(`compare: this tree against ${c.dir}${c.commit ? ` (${c.commit})` : ""}${Object.keys(o.compareEnv).length ? ` with ${Object.entries(o.compareEnv).map(([k, x]) => `${k}=${x}`).join(" ")} in its sidecars` : ""}, same rounds (direct, this, compare${cFig ? ", C proxies" : ""}${nginxFig ? ", nginx" : ""}; the two mesh windows swap order every round)`);
        console.log(`  via 2 sidecars (compare)  p50 ${f(c.mesh.p50Us)}  p90 ${f(c.mesh.p90Us)}  p99 ${f(c.mesh.p99Us)}  max ${f(c.mesh.maxUs)}  ok ${c.mesh.ok}/${c.mesh.sent}`);
        console.log(`  added p99                 this ${f(c.this_added_p99_us)}  compare ${f(c.compare_added_p99_us)}`);
        for (const k of ["frontend", "greeter"] as const) {
          const s = c.sidecars[k];
          console.log(
            `  ${k.padEnd(8)} vCPU per 1k rps  this ${s.thisVcpuPer1kRps.toFixed(3)}  compare ${s.compareVcpuPer1kRps.toFixed(3)}  ratio this/compare ${s.ratio.toFixed(3)}   ` +
              `RSS median this ${s.thisRssMedianMB.toFixed(1)} MB  compare ${s.compareRssMedianMB.toFixed(1)} MB`,
          );
        }
      }
    }
    dclient.close();
    cproxy?.client.close();
    nginx?.client.close();
    await app.close(100).catch(() => undefined);
    if (cmp) await cmp.app.close(100).catch(() => undefined);
    if (prof) {
      const sidecars = [frontend, greeter, ...(cmp ? [cmp.frontend, cmp.greeter] : [])];
      for (const sc of sidecars) sc.proc.proc.kill("SIGTERM");
      await Promise.all(sidecars.map((sc) => sc.proc.proc.exited));
    }
  } finally {
    await res.cleanup();
  }
}

await main();
process.exit(0);
