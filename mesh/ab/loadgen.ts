// The load generator: its own process, so the CPU it burns is never counted against the pods. It drives
// open-loop unary gRPC calls (a standard grpc-js client, as any user of the mesh would) at the target
// sidecar's inbound, records latency from each call's intended send time in an HDR histogram, and
// samples the pods' processes from /proc exactly at the edges of the measured window.
//
// Protocol: one JSON LoadgenConfig as argv[2]; stdout gets JSON lines {"event":"measuring"},
// {"event":"measured"} (the window's edges, for strace) and finally {"event":"result",...}.
import * as grpc from "@grpc/grpc-js";
import * as hdr from "hdr-histogram-js";
import { readFileSync } from "node:fs";
import { sampleProcess, type ProcSample } from "../../runtime/procstat.ts";
import { OpenLoopSchedule, runOpenLoop } from "./openloop.ts";

export interface LoadgenConfig {
  /** host:port of the target sidecar's gRPC inbound. */
  target: string;
  /** Full gRPC method path, e.g. /hello.Greeter/SayHello. */
  method: string;
  /** The encoded request message, sent unchanged by every call. */
  requestBase64: string;
  rateRps: number;
  warmupMs: number;
  durationMs: number;
  connections: number;
  timeoutMs: number;
  /** Processes sampled at the start and end of the measured window. */
  samplePids: number[];
  tls?: { ca: string; cert: string; key: string; serverName?: string };
}

export interface LoadgenResult {
  event: "result";
  windowMs: number;
  /** Calls whose intended send time fell in the measured window. */
  measuredCalls: number;
  /** Successful responses that arrived inside the window: the achieved rate's numerator. */
  okInWindow: number;
  achievedRps: number;
  errors: number;
  /** gRPC status name → count, for measured calls that failed. */
  errorKinds: Record<string, number>;
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number; count: number };
  /** Compressed HDR histogram of the measured calls (microseconds), for merging across reps. */
  histogram: string;
  /** How far behind schedule the generator itself got (ms): large values mean the generator saturated. */
  maxSendLagMs: number;
  before: ProcSample[];
  after: ProcSample[];
  /** pid → reason, for processes that could not be sampled (exited, restarted). */
  missing: Record<string, string>;
  loadgenCpuMs: number;
}

const HIGHEST_TRACKABLE_US = 120_000_000; // two minutes: any call slower than that is an error anyway

function statusName(code: number): string {
  return (grpc.status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

function sampleAll(pids: number[], missing: Record<string, string>): ProcSample[] {
  const out: ProcSample[] = [];
  for (const pid of pids) {
    try {
      out.push(sampleProcess(pid));
    } catch (e) {
      missing[String(pid)] = `could not read /proc/${pid}: ${(e as Error).message}`;
    }
  }
  return out;
}

function makeClients(cfg: LoadgenConfig): grpc.Client[] {
  const creds = cfg.tls
    ? grpc.credentials.createSsl(readFileSync(cfg.tls.ca), readFileSync(cfg.tls.key), readFileSync(cfg.tls.cert))
    : grpc.credentials.createInsecure();
  const clients: grpc.Client[] = [];
  for (let i = 0; i < cfg.connections; i++) {
    // A local subchannel pool gives every client its own HTTP/2 connection, like separate callers would.
    const options: grpc.ChannelOptions = { "grpc.use_local_subchannel_pool": 1, "grpc.max_receive_message_length": -1 };
    if (cfg.tls?.serverName) options["grpc.ssl_target_name_override"] = cfg.tls.serverName;
    clients.push(new grpc.Client(cfg.target, creds, options));
  }
  return clients;
}

async function waitReady(clients: grpc.Client[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await Promise.all(
    clients.map(
      (c) =>
        new Promise<void>((resolve, reject) =>
          c.waitForReady(deadline, (err) => (err ? reject(new Error(`gRPC connection to the target did not become ready: ${err.message}`)) : resolve())),
        ),
    ),
  );
}

export async function runLoad(cfg: LoadgenConfig, emit: (line: object) => void): Promise<LoadgenResult> {
  const request = Buffer.from(cfg.requestBase64, "base64");
  const serialize = (): Buffer => request; // the same bytes every call: no per-call encoding
  const deserialize = (b: Buffer): Buffer => b; // the harness measures the hop, it never reads replies
  const clients = makeClients(cfg);
  try {
    await waitReady(clients, Math.max(cfg.timeoutMs, 5000));
    const histogram = hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: HIGHEST_TRACKABLE_US,
      numberOfSignificantValueDigits: 3,
      useWebAssembly: false,
    });
    const missing: Record<string, string> = {};
    const errorKinds: Record<string, number> = {};
    const cpuStart = process.cpuUsage();

    const t0 = performance.now() + 20; // a little slack so the first request is not already late
    const windowStart = t0 + cfg.warmupMs;
    const windowEnd = windowStart + cfg.durationMs;
    const schedule = new OpenLoopSchedule(cfg.rateRps, t0, windowEnd);

    let before: ProcSample[] | undefined;
    let windowClosed = false;
    let measuredCalls = 0;
    let measuredDone = 0;
    let okInWindow = 0;
    let errors = 0;
    let maxSendLagMs = 0;
    let next = 0;
    const metadata = new grpc.Metadata();
    const method = cfg.method;

    const send = (_index: number, intendedMs: number): void => {
      const now = performance.now();
      if (now - intendedMs > maxSendLagMs) maxSendLagMs = now - intendedMs;
      const measured = intendedMs >= windowStart;
      if (measured) {
        if (before === undefined) {
          before = sampleAll(cfg.samplePids, missing);
          emit({ event: "measuring" });
        }
        measuredCalls++;
      }
      const client = clients[next]!;
      next = next + 1 === clients.length ? 0 : next + 1;
      client.makeUnaryRequest(method, serialize, deserialize, request, metadata, { deadline: Date.now() + cfg.timeoutMs }, (err) => {
        const done = performance.now();
        if (!err && !windowClosed && done >= windowStart) okInWindow++;
        if (!measured) return;
        measuredDone++;
        if (err) {
          errors++;
          const name = statusName(err.code ?? grpc.status.UNKNOWN);
          errorKinds[name] = (errorKinds[name] ?? 0) + 1;
        } else {
          histogram.recordValue(Math.max(1, Math.round((done - intendedMs) * 1000)));
        }
      });
    };

    await runOpenLoop(schedule, send);
    // The last request is due just before windowEnd: wait for the window to close, then sample.
    const tail = windowEnd - performance.now();
    if (tail > 0) await Bun.sleep(tail);
    windowClosed = true;
    const after = sampleAll(cfg.samplePids, missing);
    const windowMs = performance.now() - windowStart;
    emit({ event: "measured" });
    before ??= [];

    // Drain: measured calls still in flight get their latency recorded or time out as errors.
    const drainDeadline = performance.now() + cfg.timeoutMs + 1000;
    while (measuredDone < measuredCalls && performance.now() < drainDeadline) await Bun.sleep(5);
    const lost = measuredCalls - measuredDone;
    if (lost > 0) {
      errors += lost;
      errorKinds.NO_RESPONSE = (errorKinds.NO_RESPONSE ?? 0) + lost;
    }
    const cpu = process.cpuUsage(cpuStart);
    const pct = (p: number) => (histogram.totalCount > 0 ? histogram.getValueAtPercentile(p) : 0);
    const result: LoadgenResult = {
      event: "result",
      windowMs,
      measuredCalls,
      okInWindow,
      achievedRps: okInWindow / (windowMs / 1000),
      errors,
      errorKinds,
      latencyUs: {
        p50: pct(50),
        p90: pct(90),
        p99: pct(99),
        p999: pct(99.9),
        max: histogram.totalCount > 0 ? histogram.maxValue : 0,
        mean: histogram.totalCount > 0 ? histogram.mean : 0,
        count: histogram.totalCount,
      },
      histogram: hdr.encodeIntoCompressedBase64(histogram),
      maxSendLagMs,
      before,
      after,
      missing,
      loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    };
    return result;
  } finally {
    for (const c of clients) c.close();
  }
}

export function parseLoadgenConfig(text: string | undefined): LoadgenConfig {
  if (!text) throw new Error("loadgen: pass the JSON config as the first argument");
  const cfg = JSON.parse(text) as LoadgenConfig;
  const need = (cond: boolean, what: string) => {
    if (!cond) throw new Error(`loadgen config: ${what}`);
  };
  need(typeof cfg.target === "string" && /^[^\s]+:\d+$/.test(cfg.target), `target must be host:port, got ${JSON.stringify(cfg.target)}`);
  need(typeof cfg.method === "string" && /^\/[\w.]+\/\w+$/.test(cfg.method), `method must be /pkg.Service/Method, got ${JSON.stringify(cfg.method)}`);
  need(typeof cfg.requestBase64 === "string", "requestBase64 missing");
  need(cfg.rateRps > 0 && cfg.durationMs > 0 && cfg.warmupMs >= 0, "rateRps, durationMs must be > 0 and warmupMs >= 0");
  need(Number.isInteger(cfg.connections) && cfg.connections > 0, "connections must be a positive integer");
  need(Array.isArray(cfg.samplePids) && cfg.samplePids.every((p) => Number.isInteger(p) && p > 0), "samplePids must be pids");
  return cfg;
}

if (import.meta.main) {
  const emit = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
  try {
    const cfg = parseLoadgenConfig(process.argv[2]);
    emit(await runLoad(cfg, emit));
    process.exit(0);
  } catch (e) {
    emit({ event: "error", message: (e as Error).message });
    process.exit(1);
  }
}
