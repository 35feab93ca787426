// Folds the runs into one summary row per transport × rate × payload, with 95% intervals across reps and
// the paired saving against the baseline. Failed runs are counted, never averaged in.
import type { GroupSummary, LatencyUs, RunRecord, SavingSummary } from "./report-types.ts";
import { confidenceInterval95, mean, pairedSaving } from "./stats.ts";

const key = (t: string, rate: number, payload: number) => `${t}\u0000${rate}\u0000${payload}`;

function meanLatency(runs: RunRecord[]): LatencyUs {
  const pick = (k: keyof LatencyUs) => (runs.length ? mean(runs.map((r) => r.latency_us[k])) : Number.NaN);
  return { p50: pick("p50"), p90: pick("p90"), p99: pick("p99"), p999: pick("p999"), max: pick("max"), mean: pick("mean") };
}

function verdict(s: { significant: boolean; fraction: { low: number | null; mean: number } }): string {
  if (s.fraction.low === null) return "not enough reps for an interval";
  if (!s.significant) return "not significant (interval crosses 0)";
  return s.fraction.mean > 0 ? "significant saving" : "significant loss (uses more CPU)";
}

export function summarize(runs: RunRecord[], baseline: string): GroupSummary[] {
  const groups = new Map<string, RunRecord[]>();
  const order: [string, number, number][] = [];
  for (const r of runs) {
    const k = key(r.transport, r.rate_rps, r.payload_bytes);
    if (!groups.has(k)) {
      groups.set(k, []);
      order.push([r.transport, r.rate_rps, r.payload_bytes]);
    }
    groups.get(k)!.push(r);
  }
  // Per rep, the figure of an ok run (undefined for a failed or missing one), for pairing.
  const byRep = (rs: RunRecord[]): (number | undefined)[] => {
    const out: (number | undefined)[] = [];
    for (const r of rs) out[r.rep - 1] = r.ok ? r.vcpu_per_1000_rps : undefined;
    return out;
  };
  return order.map(([transport, rate, payload]) => {
    const all = groups.get(key(transport, rate, payload))!;
    const ok = all.filter((r) => r.ok);
    const role = (which: "app" | "sidecar") =>
      ok.length ? mean(ok.map((r) => r.processes.filter((p) => p.role === which).reduce((s, p) => s + p.vcpu_per_1000_rps, 0))) : Number.NaN;
    let saving: SavingSummary | null = null;
    if (transport !== baseline) {
      const base = groups.get(key(baseline, rate, payload));
      if (base) {
        const s = pairedSaving(byRep(base), byRep(all));
        saving = { baseline, fraction: s.fraction, vcpu_per_1000_rps: s.absolute, significant: s.significant, verdict: verdict(s), pairs: s.pairs };
      }
    }
    return {
      transport,
      rate_rps: rate,
      payload_bytes: payload,
      reps_ok: ok.length,
      reps_failed: all.length - ok.length,
      achieved_rps: confidenceInterval95(ok.map((r) => r.achieved_rps)),
      vcpu_per_1000_rps: confidenceInterval95(ok.map((r) => r.vcpu_per_1000_rps)),
      latency_us: meanLatency(ok),
      vcpu_per_1000_rps_by_role: { app: role("app"), sidecar: role("sidecar") },
      saving_vs_baseline: saving,
    };
  });
}
