// The load generator: its own process, so the CPU it burns is never counted against the pods. It drives
// open-loop calls (unary gRPC at a sidecar's inbound, or HTTP GET at an app: see drivers.ts), records
// latency from each call's intended send time in an HDR histogram, and samples the pods' processes from
// /proc exactly at the edges of the measured window.
//
// Protocol: one JSON LoadgenConfig as argv[2]; stdout gets JSON lines {"event":"measuring"},
// {"event":"measured"} (the window's edges, for strace) and finally {"event":"result",...}.
import * as hdr from "hdr-histogram-js";
import { ProcessTracker, windowFigures, type TrackerReading, type WindowFigures } from "../../runtime/procstat.ts";
import { grpcDriver, httpDriver, type GrpcTarget, type HttpTarget } from "./drivers.ts";
import { OpenLoopSchedule, runOpenLoop } from "./openloop.ts";

export interface LoadgenConfig {
  target: GrpcTarget | HttpTarget;
  rateRps: number;
  warmupMs: number;
  durationMs: number;
  timeoutMs: number;
  /** Processes sampled at the start and end of the measured window. */
  samplePids: number[];
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
  /** gRPC status name (or HTTP_<code>, CONNECTION_FAILED, NO_RESPONSE) → count, for measured calls that failed. */
  errorKinds: Record<string, number>;
  latencyUs: { p50: number; p90: number; p99: number; p999: number; max: number; mean: number; count: number };
  /** Compressed HDR histogram of the measured calls (microseconds), for merging across reps. */
  histogram: string;
  /** How far behind schedule the generator itself got (ms): large values mean the generator saturated. */
  maxSendLagMs: number;
  /** Each sampled process's CPU, context switches and RSS over the measured window. */
  processes: WindowFigures[];
  /** pid → reason, for processes that could not be sampled (exited, restarted). */
  missing: Record<string, string>;
  /** CPU this generator used inside the measured window (all its threads). */
  loadgenCpuMs: number;
}

const HIGHEST_TRACKABLE_US = 120_000_000; // two minutes: any call slower than that is an error anyway

/** Polls every tracked process; one that cannot be read is reported in `missing` and tracked no more. */
function pollAll(trackers: Map<number, ProcessTracker>, missing: Record<string, string>): Map<number, TrackerReading> {
  const out = new Map<number, TrackerReading>();
  for (const [pid, t] of trackers) {
    try {
      out.set(pid, t.poll());
    } catch (e) {
      missing[String(pid)] = (e as Error).message;
      trackers.delete(pid);
    }
  }
  return out;
}

/** How often the pods are polled inside the window, so threads that exit lose little of their counters. */
const POLL_MS = 250;

export async function runLoad(cfg: LoadgenConfig, emit: (line: object) => void): Promise<LoadgenResult> {
  const driver = cfg.target.kind === "grpc" ? grpcDriver(cfg.target) : httpDriver(cfg.target);
  try {
    await driver.ready(cfg.timeoutMs);
    const histogram = hdr.build({
      lowestDiscernibleValue: 1,
      highestTrackableValue: HIGHEST_TRACKABLE_US,
      numberOfSignificantValueDigits: 3,
      useWebAssembly: false,
    });
    const missing: Record<string, string> = {};
    const errorKinds: Record<string, number> = {};
    let cpuStart: NodeJS.CpuUsage | undefined;

    const t0 = performance.now() + 20; // a little slack so the first request is not already late
    const windowStart = t0 + cfg.warmupMs;
    const windowEnd = windowStart + cfg.durationMs;
    const schedule = new OpenLoopSchedule(cfg.rateRps, t0, windowEnd);

    const trackers = new Map(cfg.samplePids.map((pid) => [pid, new ProcessTracker(pid)] as const));
    let before: Map<number, TrackerReading> | undefined;
    let poller: ReturnType<typeof setInterval> | undefined;
    let windowClosed = false;
    let measuredCalls = 0;
    let measuredDone = 0;
    let okInWindow = 0;
    let errors = 0;
    let maxSendLagMs = 0;

    const send = (_index: number, intendedMs: number): void => {
      const now = performance.now();
      if (now - intendedMs > maxSendLagMs) maxSendLagMs = now - intendedMs;
      const measured = intendedMs >= windowStart;
      if (measured) {
        if (before === undefined) {
          before = pollAll(trackers, missing);
          poller = setInterval(() => pollAll(trackers, missing), POLL_MS);
          cpuStart = process.cpuUsage();
          emit({ event: "measuring" });
        }
        measuredCalls++;
      }
      driver.call(Date.now() + cfg.timeoutMs, (failure) => {
        const done = performance.now();
        if (failure === null && !windowClosed && done >= windowStart) okInWindow++;
        if (!measured) return;
        measuredDone++;
        if (failure !== null) {
          errors++;
          errorKinds[failure] = (errorKinds[failure] ?? 0) + 1;
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
    clearInterval(poller);
    const after = pollAll(trackers, missing);
    const cpu = process.cpuUsage(cpuStart);
    const windowMs = performance.now() - windowStart;
    emit({ event: "measured" });
    const processes: WindowFigures[] = [];
    for (const [pid, end] of after) {
      const start = before?.get(pid);
      if (start) processes.push(windowFigures(pid, start, end));
    }

    // Drain: measured calls still in flight get their latency recorded or time out as errors.
    const drainDeadline = performance.now() + cfg.timeoutMs + 1000;
    while (measuredDone < measuredCalls && performance.now() < drainDeadline) await Bun.sleep(5);
    const lost = measuredCalls - measuredDone;
    if (lost > 0) {
      errors += lost;
      errorKinds.NO_RESPONSE = (errorKinds.NO_RESPONSE ?? 0) + lost;
    }
    // HDR reports a percentile as the top of its bucket (3 significant digits), which can exceed the
    // exact maximum; cap so the figures stay ordered p50 ≤ … ≤ p99.9 ≤ max.
    const pct = (p: number) => (histogram.totalCount > 0 ? Math.min(histogram.getValueAtPercentile(p), histogram.maxValue) : 0);
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
      processes,
      missing,
      loadgenCpuMs: (cpu.user + cpu.system) / 1000,
    };
    return result;
  } finally {
    driver.close();
  }
}

export function parseLoadgenConfig(text: string | undefined): LoadgenConfig {
  if (!text) throw new Error("loadgen: pass the JSON config as the first argument");
  const cfg = JSON.parse(text) as LoadgenConfig;
  const need = (cond: boolean, what: string) => {
    if (!cond) throw new Error(`loadgen config: ${what}`);
  };
  // Parsed JSON is untrusted until checked: look at it through a loose record type.
  const t = (cfg as unknown as { target?: Record<string, unknown> }).target;
  need(typeof t === "object" && t !== null && (t.kind === "grpc" || t.kind === "http"), 'target.kind must be "grpc" or "http"');
  if (t!.kind === "grpc") {
    need(typeof t!.target === "string" && /^[^\s]+:\d+$/.test(t!.target), `target must be host:port, got ${JSON.stringify(t!.target)}`);
    need(typeof t!.method === "string" && /^\/[\w.]+\/\w+$/.test(t!.method), `method must be /pkg.Service/Method, got ${JSON.stringify(t!.method)}`);
    need(typeof t!.requestBase64 === "string", "requestBase64 missing");
    need(Number.isInteger(t!.connections) && (t!.connections as number) > 0, "connections must be a positive integer");
  } else {
    need(typeof t!.url === "string" && /^http:\/\/[^\s]+$/.test(t!.url), `url must be an http:// URL, got ${JSON.stringify(t!.url)}`);
  }
  need(cfg.rateRps > 0 && cfg.durationMs > 0 && cfg.warmupMs >= 0, "rateRps, durationMs must be > 0 and warmupMs >= 0");
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
