// The notes that tell a reader when figures are not to be trusted as they stand: a rate the machine
// could not sustain, the load generator's own CPU on a small machine, and a machine busy with other work.
import { fmtNum } from "./format.ts";
import type { AbReport, RunRecord } from "./report-types.ts";

export function qualityNotes(runs: RunRecord[], transports: string[], rates: number[], host: AbReport["machine"]): string[] {
  const notes: string[] = [];
  for (const t of transports) {
    const rs = runs.filter((r) => r.ok && r.transport === t);
    for (const rate of rates) {
      const low = rs.filter((r) => r.rate_rps === rate && r.achieved_rps < rate * 0.9);
      if (low.length) {
        const lag = Math.max(...low.map((r) => r.loadgen.max_send_lag_ms));
        notes.push(
          `${t} @ ${rate} rps achieved only ${fmtNum(Math.min(...low.map((r) => r.achieved_rps)))} rps in ${low.length} run(s) (load generator max send lag ${fmtNum(lag)} ms): the machine saturated, so that rate measures an overloaded system`,
        );
      }
    }
  }
  const lgCpu = runs.filter((r) => r.ok).map((r) => r.loadgen.cpu_seconds / Math.max(1e-9, r.window_seconds));
  if (lgCpu.length) {
    notes.push(
      `the load generator ran in its own process and is not counted; it used about ${fmtNum(lgCpu.reduce((a, b) => a + b, 0) / lgCpu.length)} vCPU on this ${host.cpus}-CPU machine, competing with the pods`,
    );
  }
  const busiest = Math.max(host.load_average.start, host.load_average.end);
  if (busiest > host.cpus) {
    // Other work competes with the pods for CPU and inflates latency; the interleaving spreads it over
    // all transports, but the intervals widen. Say so rather than let it pass unseen.
    notes.push(
      `the machine was busy: 1-minute load average ${fmtNum(host.load_average.start)} at the start and ${fmtNum(host.load_average.end)} at the end on ${host.cpus} CPUs — other processes competed with the pods, so expect wide intervals and inflated latency; rerun on an idle machine for figures to quote`,
    );
  }
  return notes;
}
