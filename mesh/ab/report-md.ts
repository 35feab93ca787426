// report.md: the summary a platform engineer pastes into a design review, plus every run for audit.
import { fmtBytes, fmtInterval, fmtNum, fmtPct, fmtUs } from "./format.ts";
import type { AbReport } from "./report-types.ts";

/** Markdown table cells must not break the table: escape pipes and flatten newlines. */
function cell(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\|/g, "\\|").replace(/[\r\n]+/g, " ");
}

function table(header: string[], rows: string[][]): string {
  const lines = [`| ${header.map(cell).join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const r of rows) lines.push(`| ${r.map(cell).join(" | ")} |`);
  return lines.join("\n");
}

export function renderMarkdown(report: AbReport): string {
  const o = report.options;
  const out: string[] = [];
  out.push(`# mesh ab — ${o.transports.join(" vs ")}`);
  out.push("");
  out.push(
    `Config \`${cell(report.config)}\`; load: ${cell(report.target.description)}; ` +
      `open loop, ${report.target.kind === "grpc" ? `${o.connections} gRPC connections, ` : ""}${o.duration_seconds} s measured after ${o.warmup_seconds} s warm-up, ${o.reps} rep(s), ` +
      `transports interleaved per rep. Machine: ${report.machine.cpus} CPU (${cell(report.machine.cpu_model)}), Linux ${cell(report.machine.kernel)}, Bun ${cell(report.machine.bun)}, load average ${report.machine.load_average.start.toFixed(2)} → ${report.machine.load_average.end.toFixed(2)}. ` +
      `Started ${report.started_at}.`,
  );
  out.push("");
  if (report.summary.failed_runs > 0) {
    out.push(`**${report.summary.failed_runs} run(s) failed** — see the runs table; their figures are left out of the summary.`);
    out.push("");
  }
  out.push("## vCPU per 1,000 rps and saving vs " + report.summary.baseline);
  out.push("");
  out.push(
    "vCPU per 1,000 rps counts every app and sidecar process of the mesh (all threads, from /proc) during the measured window, divided by the achieved rate. " +
      "The saving pairs rep r of a transport with rep r of the baseline; the interval is a 95% t-interval across reps.",
  );
  out.push("");
  out.push(
    table(
      ["transport", "rate (rps)", "payload", "achieved rps", "vCPU / 1k rps [95% CI]", "app / sidecar", `saving vs ${report.summary.baseline} [95% CI]`, "verdict", "reps ok"],
      report.summary.groups.map((g) => [
        g.transport,
        fmtNum(g.rate_rps),
        fmtBytes(g.payload_bytes),
        fmtNum(g.achieved_rps.mean),
        fmtInterval(g.vcpu_per_1000_rps, (v) => fmtNum(v, 3)),
        `${fmtNum(g.vcpu_per_1000_rps_by_role.app)} / ${fmtNum(g.vcpu_per_1000_rps_by_role.sidecar)}`,
        g.saving_vs_baseline ? fmtInterval(g.saving_vs_baseline.fraction, fmtPct) : "(baseline)",
        g.saving_vs_baseline ? g.saving_vs_baseline.verdict : "",
        `${g.reps_ok}/${g.reps_ok + g.reps_failed}`,
      ]),
    ),
  );
  out.push("");
  if (report.summary.idle.length) {
    out.push("## Idle CPU (no load, measured once after start-up)");
    out.push("");
    out.push(
      table(
        ["transport", "vCPU (all apps + sidecars)", "per process"],
        report.summary.idle.map((i) => [i.transport, fmtNum(i.vcpu), i.by_process.map((p) => `${p.pod}/${p.role} ${fmtNum(p.vcpu)}`).join("; ")]),
      ),
    );
    out.push("");
  }
  out.push("## Latency (from intended send time, mean of each rep's percentile)");
  out.push("");
  out.push(
    table(
      ["transport", "rate (rps)", "payload", "p50", "p90", "p99", "p99.9", "max"],
      report.summary.groups.map((g) => [
        g.transport,
        fmtNum(g.rate_rps),
        fmtBytes(g.payload_bytes),
        fmtUs(g.latency_us.p50),
        fmtUs(g.latency_us.p90),
        fmtUs(g.latency_us.p99),
        fmtUs(g.latency_us.p999),
        fmtUs(g.latency_us.max),
      ]),
    ),
  );
  out.push("");
  out.push("## Runs");
  out.push("");
  out.push(
    table(
      ["run", "in use", "achieved rps", "errors", "vCPU / 1k rps", "p50", "p99", "p99.9", "per process (vCPU/1k rps, RSS, vol/invol ctx sw, syscalls/req)", "status"],
      report.runs.map((r) => [
        r.id,
        r.transport_in_use ?? "?",
        fmtNum(r.achieved_rps),
        String(r.errors),
        fmtNum(r.vcpu_per_1000_rps),
        fmtUs(r.latency_us.p50),
        fmtUs(r.latency_us.p99),
        fmtUs(r.latency_us.p999),
        r.processes
          .map(
            (p) =>
              `${p.pod}/${p.role}: ${fmtNum(p.vcpu_per_1000_rps)}, ${fmtBytes(p.rss_bytes)}, ${p.voluntary_ctx_switches}/${p.involuntary_ctx_switches}` +
              (p.syscalls_per_request !== null ? `, ${fmtNum(p.syscalls_per_request)}` : ""),
          )
          .join("; "),
        r.ok ? "ok" : `FAILED: ${r.failure ?? "unknown"}`,
      ]),
    ),
  );
  if (report.summary.notes.length) {
    out.push("");
    out.push("## Notes");
    out.push("");
    for (const n of report.summary.notes) out.push(`- ${n.replace(/[\r\n]+/g, " ")}`);
  }
  out.push("");
  return out.join("\n");
}
