// The shape of report.json. Keys are snake_case because the file is read by people and by other tools
// (jq, notebooks), like mesh.yaml. report.md and report.html are rendered from this object alone.
import type { Interval } from "./stats.ts";

export interface LatencyUs {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export interface ProcessFigures {
  pod: string;
  role: "app" | "sidecar";
  pid: number;
  /** CPU time of all threads (user + system) inside the measured window. */
  cpu_seconds: number;
  /** cpu_seconds / window seconds: cores this process kept busy. */
  vcpu: number;
  vcpu_per_1000_rps: number;
  rss_bytes: number;
  voluntary_ctx_switches: number;
  involuntary_ctx_switches: number;
  /** strace -c totals; null when --strace was not given or strace could not attach. */
  syscalls: number | null;
  syscalls_per_request: number | null;
  top_syscalls: { name: string; calls: number }[] | null;
}

export interface RunRecord {
  id: string;
  transport: string;
  /** Transport the sidecars reported in use (admin /status) — proves the run measured what it says. */
  transport_in_use: string | null;
  rate_rps: number;
  achieved_rps: number;
  payload_bytes: number;
  rep: number;
  ok: boolean;
  /** Why the run failed, when ok is false. */
  failure: string | null;
  window_seconds: number;
  calls: number;
  errors: number;
  error_kinds: Record<string, number>;
  latency_us: LatencyUs;
  /** The run's whole latency distribution (µs) as a compressed HdrHistogram (base64), for merging reps
   *  or plotting with any HdrHistogram tool; "" when the run measured nothing. */
  latency_hdr: string;
  /** Cores used by every app and sidecar of the mesh during the window. */
  vcpu: number;
  vcpu_per_1000_rps: number;
  processes: ProcessFigures[];
  loadgen: { cpu_seconds: number; max_send_lag_ms: number };
  started_at: string;
}

export interface GroupSummary {
  transport: string;
  rate_rps: number;
  payload_bytes: number;
  reps_ok: number;
  reps_failed: number;
  achieved_rps: Interval;
  vcpu_per_1000_rps: Interval;
  /** Means across reps of each run's percentile (not a merged histogram: reps are separate samples). */
  latency_us: LatencyUs;
  /** Per-role split of vCPU per 1,000 rps, summed over pods, mean across reps. */
  vcpu_per_1000_rps_by_role: { app: number; sidecar: number };
  /** null for the baseline itself. */
  saving_vs_baseline: SavingSummary | null;
}

export interface SavingSummary {
  baseline: string;
  /** Fraction of the baseline's vCPU per 1,000 rps saved: 0.2 = 20% less CPU per request. */
  fraction: Interval;
  /** Baseline minus candidate, vCPU per 1,000 rps. */
  vcpu_per_1000_rps: Interval;
  significant: boolean;
  /** "significant saving" | "significant loss (uses more CPU)" | "not significant (interval crosses 0)" | "not enough reps for an interval" */
  verdict: string;
  pairs: number;
}

export interface IdleFigure {
  transport: string;
  window_seconds: number;
  /** Cores used by every app and sidecar of the mesh while nothing called it. */
  vcpu: number;
  by_process: { pod: string; role: "app" | "sidecar"; vcpu: number }[];
}

export interface AbReport {
  tool: "rpal-mesh ab";
  version: 1;
  started_at: string;
  finished_at: string;
  config: string;
  /** Where the load entered: kind "grpc" (a sidecar inbound) or "http" (an app's own port). */
  target: { pod: string; kind: "grpc" | "http"; method: string; description: string };
  options: {
    transports: string[];
    rates_rps: number[];
    duration_seconds: number;
    warmup_seconds: number;
    payload_bytes: number[];
    reps: number;
    baseline: string;
    connections: number;
    strace: boolean;
    quick: boolean;
  };
  /** load_average: 1-minute load at the start and the end; above `cpus` other work competed with the pods. */
  machine: { cpus: number; cpu_model: string; kernel: string; bun: string; load_average: { start: number; end: number } };
  runs: RunRecord[];
  summary: {
    baseline: string;
    groups: GroupSummary[];
    /** CPU of each transport's pods with no load at all (measured once, right after start-up). */
    idle: IdleFigure[];
    failed_runs: number;
    notes: string[];
  };
}
