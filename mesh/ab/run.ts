// One measured run: a fresh load-generator process at one rate and payload against one transport's pods,
// turned into a RunRecord. A run fails (ok=false, with the reason) when a pod process died or restarted,
// a process could not be sampled, the sidecars were not on the asked transport, the generator failed,
// or too many calls failed; its figures are kept for the record but never enter the summary.
import { join } from "node:path";
import type { GrpcTarget, HttpTarget } from "./drivers.ts";
import type { MeshInstance, MeshProcess } from "./instance.ts";
import type { LoadgenConfig, LoadgenResult } from "./loadgen.ts";
import type { ProcessFigures, RunRecord } from "./report-types.ts";
import type { StraceSession, SyscallCounts } from "./strace.ts";
import { readLines } from "../../runtime/lines.ts";

const LOADGEN = join(import.meta.dir, "loadgen.ts");

export interface RunSpec {
  transport: string;
  rateRps: number;
  payloadBytes: number;
  rep: number;
  warmupMs: number;
  durationMs: number;
  timeoutMs: number;
  maxErrorRate: number;
  target: GrpcTarget | HttpTarget;
}

const EMPTY_LATENCY = { p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };

export function runId(s: Pick<RunSpec, "transport" | "rateRps" | "payloadBytes" | "rep">): string {
  return `${s.transport}-${s.rateRps}rps-${s.payloadBytes}B-rep${s.rep}`;
}

export function failedRecord(spec: Pick<RunSpec, "transport" | "rateRps" | "payloadBytes" | "rep">, failure: string, inUse: string | null): RunRecord {
  return {
    id: runId(spec),
    transport: spec.transport,
    transport_in_use: inUse,
    rate_rps: spec.rateRps,
    achieved_rps: 0,
    payload_bytes: spec.payloadBytes,
    rep: spec.rep,
    ok: false,
    failure,
    window_seconds: 0,
    calls: 0,
    errors: 0,
    error_kinds: {},
    latency_us: { ...EMPTY_LATENCY },
    latency_hdr: "",
    vcpu: 0,
    vcpu_per_1000_rps: Number.NaN,
    processes: [],
    loadgen: { cpu_seconds: 0, max_send_lag_ms: 0 },
    started_at: new Date().toISOString(),
  };
}

/** Turns a load-generator result into the run's figures (pure: unit-tested without processes). */
export function buildRecord(
  spec: RunSpec,
  procs: MeshProcess[],
  result: LoadgenResult,
  inUse: string | null,
  syscalls: Map<number, SyscallCounts | null> | undefined,
  startedAt: string,
): RunRecord {
  const windowS = result.windowMs / 1000;
  const achieved = result.achievedRps;
  const perK = (v: number) => (achieved > 0 ? v / (achieved / 1000) : Number.NaN);
  const problems: string[] = [];
  const processes: ProcessFigures[] = [];
  let vcpu = 0;
  for (const p of procs) {
    const w = result.processes.find((x) => x.pid === p.pid);
    if (!w) {
      problems.push(`${p.pod}/${p.role} (pid ${p.pid}) could not be sampled: ${result.missing[String(p.pid)] ?? "no sample"}`);
      continue;
    }
    const cpuS = w.cpuNs / 1e9;
    const pv = cpuS / windowS;
    vcpu += pv;
    const sc = syscalls?.get(p.pid) ?? null;
    processes.push({
      pod: p.pod,
      role: p.role,
      pid: p.pid,
      cpu_seconds: cpuS,
      vcpu: pv,
      vcpu_per_1000_rps: perK(pv),
      rss_bytes: w.rssBytes,
      voluntary_ctx_switches: w.voluntaryCtxSwitches,
      involuntary_ctx_switches: w.involuntaryCtxSwitches,
      syscalls: sc ? sc.total : null,
      syscalls_per_request: sc && result.measuredCalls > 0 ? sc.total / result.measuredCalls : null,
      top_syscalls: sc ? sc.top : null,
    });
  }
  if (inUse !== spec.transport) problems.push(`the sidecars report transport ${inUse ?? "unknown"}, not ${spec.transport}`);
  if (result.measuredCalls === 0) problems.push("no call was measured");
  else if (result.errors / result.measuredCalls > spec.maxErrorRate) {
    const kinds = Object.entries(result.errorKinds)
      .map(([k, n]) => `${k} ×${n}`)
      .join(", ");
    problems.push(`${result.errors} of ${result.measuredCalls} calls failed (${kinds}), over --max-error-rate ${spec.maxErrorRate}`);
  }
  if (!(achieved > 0)) problems.push("no call succeeded inside the measured window");
  return {
    id: runId(spec),
    transport: spec.transport,
    transport_in_use: inUse,
    rate_rps: spec.rateRps,
    achieved_rps: achieved,
    payload_bytes: spec.payloadBytes,
    rep: spec.rep,
    ok: problems.length === 0,
    failure: problems.length ? problems.join("; ") : null,
    window_seconds: windowS,
    calls: result.measuredCalls,
    errors: result.errors,
    error_kinds: result.errorKinds,
    latency_us: {
      p50: result.latencyUs.p50,
      p90: result.latencyUs.p90,
      p99: result.latencyUs.p99,
      p999: result.latencyUs.p999,
      max: result.latencyUs.max,
      mean: result.latencyUs.mean,
    },
    latency_hdr: result.histogram,
    vcpu,
    vcpu_per_1000_rps: perK(vcpu),
    processes,
    loadgen: { cpu_seconds: result.loadgenCpuMs / 1000, max_send_lag_ms: result.maxSendLagMs },
    started_at: startedAt,
  };
}

/** Runs the load generator against `inst` and returns the run's record (never throws for a failed run). */
export async function measureRun(inst: MeshInstance, spec: RunSpec, strace: StraceSession | undefined, signal: AbortSignal): Promise<RunRecord> {
  const startedAt = new Date().toISOString();
  const unhealthy = inst.health();
  if (unhealthy) return failedRecord(spec, unhealthy, null);
  const inUse = await inst.transportInUse();
  const procs = inst.processes();
  const cfg: LoadgenConfig = {
    target: spec.target,
    rateRps: spec.rateRps,
    warmupMs: spec.warmupMs,
    durationMs: spec.durationMs,
    timeoutMs: spec.timeoutMs,
    samplePids: procs.map((p) => p.pid),
  };
  const lg = Bun.spawn([process.execPath, LOADGEN, JSON.stringify(cfg)], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const onAbort = () => lg.kill("SIGKILL");
  signal.addEventListener("abort", onAbort);
  let result: LoadgenResult | undefined;
  let error: string | undefined;
  let syscalls: Map<number, SyscallCounts | null> | undefined;
  let straceStopped: Promise<void> | undefined;
  const stderrText = new Response(lg.stderr).text();
  // A generator that hangs (it should not: every call has a deadline) is killed well after its budget.
  const budgetMs = spec.warmupMs + spec.durationMs + spec.timeoutMs * 2 + 30_000;
  const killer = setTimeout(() => lg.kill("SIGKILL"), budgetMs);
  try {
    for await (const line of readLines(lg.stdout)) {
      let msg: { event?: string; message?: string };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        continue;
      }
      if (msg.event === "measuring") strace?.start(procs.map((p) => p.pid));
      else if (msg.event === "measured" && strace) {
        straceStopped = strace.stop().then((m) => {
          syscalls = m;
        });
      } else if (msg.event === "result") result = msg as unknown as LoadgenResult;
      else if (msg.event === "error") error = msg.message;
    }
    const code = await lg.exited;
    await straceStopped;
    if (!result) {
      const why = error ?? (signal.aborted ? "interrupted" : `load generator exited (${code ?? lg.signalCode}) without a result`);
      return failedRecord(spec, `${why}${(await stderrText).trim() ? `: ${(await stderrText).trim().split("\n").slice(-3).join(" | ")}` : ""}`, inUse);
    }
  } finally {
    clearTimeout(killer);
    signal.removeEventListener("abort", onAbort);
  }
  const record = buildRecord(spec, procs, result, inUse, syscalls, startedAt);
  const after = inst.health();
  if (after) {
    record.ok = false;
    record.failure = record.failure ? `${record.failure}; ${after}` : after;
    inst.rebaseline(); // later runs measure the restarted process, and say so if it dies again
  }
  return record;
}
