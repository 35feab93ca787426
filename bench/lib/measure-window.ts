// The measured window of a bench client job: CPU time and context switches of BOTH processes (this one
// and the bench server) from /proc, read/write syscalls, wall time, and latency quantiles. Without a
// server pid (the RPC floor rows: client and server in this one process) it is this process alone,
// all its threads, JIT and GC threads included as they are for the other rows.
import { readFileSync } from "node:fs";
import { diffSamples, sampleProcess, type ProcSample } from "../../runtime/procstat.ts";
import type { ClientResult } from "./client-protocol.ts";

function ioSyscalls(pid: number): number {
  // read+write syscalls only (syscr/syscw): a lower bound used when perf is not available.
  const t = readFileSync(`/proc/${pid}/io`, "utf8");
  return Number(/syscr:\s+(\d+)/.exec(t)?.[1] ?? 0) + Number(/syscw:\s+(\d+)/.exec(t)?.[1] ?? 0);
}

export interface MeasureWindow {
  serverPid: number | undefined;
  client: ProcSample;
  server: ProcSample | undefined;
  io: number;
  t0: number;
}

/** `serverPid` undefined: the server runs in this process (its CPU is in the client's figure). */
export function openWindow(serverPid: number | undefined): MeasureWindow {
  const client = sampleProcess(process.pid);
  const server = serverPid === undefined ? undefined : sampleProcess(serverPid);
  const io = ioSyscalls(process.pid) + (serverPid === undefined ? 0 : ioSyscalls(serverPid));
  return { serverPid, client, server, io, t0: performance.now() };
}

const NO_SERVER = { cpuNs: 0, voluntaryCtxSwitches: 0, involuntaryCtxSwitches: 0 };

/** `lat`: per-call latencies in ms, the first `n` of which are measured (sorted in place). */
export function closeWindow(w: MeasureWindow, callsMade: number, lat: Float64Array, n: number): Omit<ClientResult, "kind"> {
  const calls = Math.max(callsMade, 1); // the idle baseline makes no calls: per-call figures are then totals
  const wallMs = performance.now() - w.t0;
  const c = diffSamples(w.client, sampleProcess(process.pid));
  const s = w.server === undefined || w.serverPid === undefined ? NO_SERVER : diffSamples(w.server, sampleProcess(w.serverPid));
  const io = ioSyscalls(process.pid) + (w.serverPid === undefined ? 0 : ioSyscalls(w.serverPid)) - w.io;
  const sorted = lat.subarray(0, n).sort();
  const q = (p: number) => (n ? (sorted[Math.min(n - 1, Math.floor(p * n))] ?? 0) : 0);
  return {
    iterations: callsMade,
    median_us: q(0.5) * 1000,
    p99_us: q(0.99) * 1000,
    calls_per_s: (calls * 1000) / wallMs,
    wall_ms: wallMs,
    client_cpu_us_per_call: c.cpuNs / 1000 / calls,
    server_cpu_us_per_call: s.cpuNs / 1000 / calls,
    cpu_us_per_call: (c.cpuNs + s.cpuNs) / 1000 / calls,
    cpu_ns_total: c.cpuNs + s.cpuNs,
    ctx_switches_per_call: (c.voluntaryCtxSwitches + c.involuntaryCtxSwitches + s.voluntaryCtxSwitches + s.involuntaryCtxSwitches) / calls,
    io_syscalls_per_call: io / calls,
  };
}

/** TSC ticks per second, calibrated against performance.now() over 50 ms (constant_tsc machines). */
export function tscHz(tsc: () => number): number {
  const t0 = tsc();
  const p0 = performance.now();
  while (performance.now() - p0 < 50) {
    // busy-wait: a timer would do, but this keeps the calibration off the event loop's schedule
  }
  return ((tsc() - t0) * 1000) / (performance.now() - p0);
}
