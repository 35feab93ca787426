import { describe, expect, test } from "bun:test";
import type { MeshProcess } from "./instance.ts";
import type { LoadgenResult } from "./loadgen.ts";
import { buildRecord, type RunSpec } from "./run.ts";

const spec: RunSpec = {
  transport: "shm",
  rateRps: 1000,
  payloadBytes: 32,
  rep: 2,
  warmupMs: 1000,
  durationMs: 2000,
  timeoutMs: 5000,
  maxErrorRate: 0.01,
  target: { kind: "grpc", target: "127.0.0.1:1", method: "/a.B/C", requestBase64: "", connections: 1 },
};

const procs: MeshProcess[] = [
  { pod: "greeter", role: "sidecar", pid: 11, restarts: 0 },
  { pod: "greeter", role: "app", pid: 12, restarts: 0 },
];

function window(pid: number, cpuMs: number, vol: number) {
  return { pid, cpuNs: cpuMs * 1e6, rssBytes: 50e6, voluntaryCtxSwitches: vol, involuntaryCtxSwitches: vol / 10 };
}

function result(over: Partial<LoadgenResult> = {}): LoadgenResult {
  return {
    event: "result",
    windowMs: 2000,
    measuredCalls: 2000,
    okInWindow: 2000,
    achievedRps: 1000,
    errors: 0,
    errorKinds: {},
    latencyUs: { p50: 100, p90: 200, p99: 400, p999: 800, max: 900, mean: 120, count: 2000 },
    histogram: "",
    maxSendLagMs: 1,
    processes: [window(11, 400, 200), window(12, 200, 100)], // 0.4 s and 0.2 s of CPU in a 2 s window
    missing: {},
    loadgenCpuMs: 600,
    ...over,
  };
}

describe("buildRecord", () => {
  test("vCPU per 1,000 rps: CPU seconds / window seconds / (achieved rps / 1000), per process and in total", () => {
    const r = buildRecord(spec, procs, result(), "shm", undefined, "t");
    expect(r.ok).toBe(true);
    expect(r.vcpu).toBeCloseTo(0.3, 9); // (0.4 + 0.2) / 2
    expect(r.vcpu_per_1000_rps).toBeCloseTo(0.3, 9); // at 1000 rps
    const sc = r.processes.find((p) => p.role === "sidecar")!;
    expect(sc.cpu_seconds).toBeCloseTo(0.4, 9);
    expect(sc.vcpu_per_1000_rps).toBeCloseTo(0.2, 9);
    expect(sc.voluntary_ctx_switches).toBe(200);
    expect(sc.involuntary_ctx_switches).toBe(20);
    expect(sc.syscalls).toBeNull();
    expect(r.id).toBe("shm-1000rps-32B-rep2");
    expect(r.loadgen.cpu_seconds).toBeCloseTo(0.6, 9);
  });

  test("syscall counts become per-request figures", () => {
    const counts = new Map([[11, { total: 8000, top: [{ name: "write", calls: 5000 }] }], [12, null]]);
    const r = buildRecord(spec, procs, result(), "shm", counts, "t");
    expect(r.processes[0]!.syscalls_per_request).toBe(4);
    expect(r.processes[1]!.syscalls).toBeNull();
  });

  test("fails the run when the sidecars were on another transport", () => {
    const r = buildRecord(spec, procs, result(), "uds", undefined, "t");
    expect(r.ok).toBe(false);
    expect(r.failure).toContain("report transport uds, not shm");
  });

  test("fails the run when too many calls failed, naming the statuses", () => {
    const r = buildRecord(spec, procs, result({ errors: 50, errorKinds: { UNAVAILABLE: 30, DEADLINE_EXCEEDED: 20 } }), "shm", undefined, "t");
    expect(r.ok).toBe(false);
    expect(r.failure).toBe("50 of 2000 calls failed (UNAVAILABLE ×30, DEADLINE_EXCEEDED ×20), over --max-error-rate 0.01");
  });

  test("a few errors under the limit keep the run ok", () => {
    expect(buildRecord(spec, procs, result({ errors: 5, errorKinds: { UNAVAILABLE: 5 } }), "shm", undefined, "t").ok).toBe(true);
  });

  test("a process that could not be sampled fails the run and is left out of the CPU sum", () => {
    const r = buildRecord(spec, procs, result({ processes: [window(11, 400, 200)], missing: { "12": "could not read /proc/12" } }), "shm", undefined, "t");
    expect(r.ok).toBe(false);
    expect(r.failure).toContain("greeter/app (pid 12) could not be sampled: could not read /proc/12");
    expect(r.processes.length).toBe(1);
  });

  test("nothing achieved: per-1k figure is NaN (null in JSON), never Infinity", () => {
    const r = buildRecord(spec, procs, result({ achievedRps: 0, okInWindow: 0 }), "shm", undefined, "t");
    expect(r.ok).toBe(false);
    expect(Number.isNaN(r.vcpu_per_1000_rps)).toBe(true);
    expect(JSON.parse(JSON.stringify(r)).vcpu_per_1000_rps).toBeNull();
  });
});
