// A synthetic but internally consistent report for the writer and render tests (no pods needed).
import type { AbReport, RunRecord } from "../report-types.ts";
import { summarize } from "../summary.ts";

export function sampleRun(transport: string, rate: number, payload: number, rep: number, vcpuPer1k: number, ok = true): RunRecord {
  const achieved = rate * 0.999;
  const vcpu = (vcpuPer1k * achieved) / 1000;
  return {
    id: `${transport}-${rate}rps-${payload}B-rep${rep}`,
    transport,
    transport_in_use: transport,
    rate_rps: rate,
    achieved_rps: achieved,
    payload_bytes: payload,
    rep,
    ok,
    failure: ok ? null : "sidecar of pod greeter exited (code 1)",
    window_seconds: 3,
    calls: rate * 3,
    errors: ok ? 0 : 17,
    error_kinds: ok ? {} : { UNAVAILABLE: 17 },
    latency_us: { p50: 300 + rep, p90: 500, p99: 1200, p999: 4000, max: 9000, mean: 350 },
    latency_hdr: "",
    vcpu,
    vcpu_per_1000_rps: vcpuPer1k,
    processes: [
      { pod: "greeter", role: "app", pid: 100, cpu_seconds: vcpu * 1.5, vcpu: vcpu / 2, vcpu_per_1000_rps: vcpuPer1k / 2, rss_bytes: 50e6, voluntary_ctx_switches: 10, involuntary_ctx_switches: 2, syscalls: null, syscalls_per_request: null, top_syscalls: null },
      { pod: "greeter", role: "sidecar", pid: 101, cpu_seconds: vcpu * 1.5, vcpu: vcpu / 2, vcpu_per_1000_rps: vcpuPer1k / 2, rss_bytes: 60e6, voluntary_ctx_switches: 20, involuntary_ctx_switches: 3, syscalls: null, syscalls_per_request: null, top_syscalls: null },
    ],
    loadgen: { cpu_seconds: 1, max_send_lag_ms: 2 },
    started_at: "2026-11-25T18:00:00.000Z",
  };
}

export function sampleReport(overrides: { notes?: string[]; pod?: string } = {}): AbReport {
  const runs: RunRecord[] = [];
  for (const rate of [1000, 5000]) {
    for (const payload of [32, 1024]) {
      for (let rep = 1; rep <= 3; rep++) {
        runs.push(sampleRun("uds", rate, payload, rep, 0.3 + rep * 0.01));
        runs.push(sampleRun("shm", rate, payload, rep, 0.2 + rep * 0.012, !(rate === 5000 && payload === 1024 && rep === 3)));
      }
    }
  }
  return {
    tool: "rpal-mesh ab",
    version: 1,
    started_at: "2026-11-25T18:00:00.000Z",
    finished_at: "2026-11-25T18:05:00.000Z",
    config: "examples/hello/mesh.yaml",
    target: { pod: overrides.pod ?? "greeter", kind: "grpc", method: "/hello.Greeter/SayHello", description: "gRPC /hello.Greeter/SayHello into pod greeter's sidecar inbound" },
    options: { transports: ["uds", "shm"], rates_rps: [1000, 5000], duration_seconds: 3, warmup_seconds: 1, payload_bytes: [32, 1024], reps: 3, baseline: "uds", connections: 4, strace: false, quick: false },
    machine: { cpus: 2, cpu_model: "AMD EPYC", kernel: "6.18.0", bun: "1.4.5", load_average: { start: 0.5, end: 1.2 } },
    runs,
    summary: { baseline: "uds", groups: summarize(runs, "uds"), idle: [{ transport: "uds", window_seconds: 3, vcpu: 0.01, by_process: [{ pod: "greeter", role: "sidecar", vcpu: 0.01 }] }, { transport: "shm", window_seconds: 3, vcpu: 0.02, by_process: [{ pod: "greeter", role: "sidecar", vcpu: 0.02 }] }], failed_runs: runs.filter((r) => !r.ok).length, notes: overrides.notes ?? [] },
  };
}
