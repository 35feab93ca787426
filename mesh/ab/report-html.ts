// report.html: one self-contained page (inline CSS and SVG, no external asset, no server) with the
// CPU-against-rate and latency-percentile charts, the summary and every run. The only script marks the
// page once the browser has laid the charts out, which is how the headless-Chromium test knows they render.
import { fmtBytes, fmtInterval, fmtNum, fmtPct, fmtUs } from "./format.ts";
import type { AbReport, GroupSummary } from "./report-types.ts";
import { mean } from "./stats.ts";
import { barChart, esc, lineChart, type BarSeries, type LineSeries } from "./svg.ts";

const COLORS: Record<string, string> = { uds: "#6b7280", shm: "#2563eb", rpal: "#ea580c" };
const FALLBACK = ["#059669", "#9333ea", "#dc2626", "#0891b2"];

function colorOf(transport: string, index: number): string {
  return COLORS[transport] ?? FALLBACK[index % FALLBACK.length]!;
}

function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

function cpuCharts(report: AbReport): string[] {
  const rates = [...report.options.rates_rps].sort((a, b) => a - b);
  const transports = report.options.transports;
  const out: string[] = [];
  for (const payload of report.options.payload_bytes) {
    const group = (t: string, rate: number): GroupSummary | undefined =>
      report.summary.groups.find((g) => g.transport === t && g.rate_rps === rate && g.payload_bytes === payload);
    const perK: LineSeries[] = transports.map((t, ti) => ({
      name: t,
      color: colorOf(t, ti),
      points: rates.flatMap((rate, i) => {
        const g = group(t, rate);
        if (!g || g.reps_ok === 0) return [];
        const v = g.vcpu_per_1000_rps;
        return [{ x: i, y: v.mean, low: v.low, high: v.high, tooltip: `${t} @ ${rate} rps, ${payload} B: ${fmtInterval(v, (x) => fmtNum(x))} vCPU per 1k rps` }];
      }),
    }));
    out.push(
      lineChart({
        id: `cpu-per-1k-${payload}`,
        title: `vCPU per 1,000 rps vs rate — payload ${fmtBytes(payload)} (bars: 95% CI)`,
        xLabel: "asked rate (requests/s)",
        yLabel: "vCPU per 1,000 rps",
        categories: rates.map((r) => fmtNum(r)),
        series: perK,
      }),
    );
    const total: LineSeries[] = transports.map((t, ti) => ({
      name: t,
      color: colorOf(t, ti),
      points: rates.flatMap((rate, i) => {
        const runs = report.runs.filter((r) => r.ok && r.transport === t && r.rate_rps === rate && r.payload_bytes === payload);
        if (!runs.length) return [];
        const v = mean(runs.map((r) => r.vcpu));
        return [{ x: i, y: v, tooltip: `${t} @ ${rate} rps, ${payload} B: ${fmtNum(v)} vCPU (mesh total, mean of ${runs.length} reps)` }];
      }),
    }));
    out.push(
      lineChart({
        id: `cpu-total-${payload}`,
        title: `CPU used by the mesh vs rate — payload ${fmtBytes(payload)}`,
        xLabel: "asked rate (requests/s)",
        yLabel: "vCPU (all apps + sidecars)",
        categories: rates.map((r) => fmtNum(r)),
        series: total,
      }),
    );
  }
  return out;
}

function latencyCharts(report: AbReport): string[] {
  const out: string[] = [];
  const levels = [
    ["p50", "p50"],
    ["p90", "p90"],
    ["p99", "p99"],
    ["p999", "p99.9"],
  ] as const;
  for (const rate of [...report.options.rates_rps].sort((a, b) => a - b)) {
    for (const payload of report.options.payload_bytes) {
      const series: BarSeries[] = report.options.transports.map((t, ti) => {
        const g = report.summary.groups.find((x) => x.transport === t && x.rate_rps === rate && x.payload_bytes === payload);
        return {
          name: t,
          color: colorOf(t, ti),
          values: levels.map(([k]) => (g && g.reps_ok > 0 ? g.latency_us[k] : Number.NaN)),
          tooltips: levels.map(([k, label]) => `${t} ${label} @ ${rate} rps, ${payload} B: ${g ? fmtUs(g.latency_us[k]) : "no data"}`),
        };
      });
      out.push(
        barChart({
          id: `latency-${rate}-${payload}`,
          title: `Latency percentiles @ ${fmtNum(rate)} rps, ${fmtBytes(payload)} (log scale)`,
          xLabel: "percentile",
          yLabel: "latency (µs)",
          categories: levels.map(([, label]) => label),
          series,
          log: true,
          fmtTick: fmtUs,
        }),
      );
    }
  }
  return out;
}

function row(cells: string[], tag = "td"): string {
  return `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join("")}</tr>`;
}

export function renderHtml(report: AbReport): string {
  const o = report.options;
  const summaryRows = report.summary.groups.map((g) => {
    const s = g.saving_vs_baseline;
    // A significant saving is green, a significant loss red: "significant" alone does not say which.
    const cls = s ? (s.significant ? (s.fraction.mean > 0 ? "sig-better" : "sig-worse") : "nonsig") : "";
    return (
      `<tr class="${cls}">` +
      [
        g.transport,
        fmtNum(g.rate_rps),
        fmtBytes(g.payload_bytes),
        fmtNum(g.achieved_rps.mean),
        fmtInterval(g.vcpu_per_1000_rps, (v) => fmtNum(v)),
        `${fmtNum(g.vcpu_per_1000_rps_by_role.app)} / ${fmtNum(g.vcpu_per_1000_rps_by_role.sidecar)}`,
        s ? fmtInterval(s.fraction, fmtPct) : "(baseline)",
        s ? s.verdict : "",
        fmtUs(g.latency_us.p50),
        fmtUs(g.latency_us.p99),
        fmtUs(g.latency_us.p999),
        `${g.reps_ok}/${g.reps_ok + g.reps_failed}`,
      ]
        .map((c) => `<td>${esc(c)}</td>`)
        .join("") +
      "</tr>"
    );
  });
  const runRows = report.runs.map((r) =>
    row([
      r.id,
      r.transport_in_use ?? "?",
      fmtNum(r.achieved_rps),
      String(r.errors),
      fmtNum(r.vcpu_per_1000_rps),
      fmtUs(r.latency_us.p50),
      fmtUs(r.latency_us.p90),
      fmtUs(r.latency_us.p99),
      fmtUs(r.latency_us.p999),
      r.processes.map((p) => `${p.pod}/${p.role} ${fmtNum(p.vcpu_per_1000_rps)} vCPU/1k, ${fmtBytes(p.rss_bytes)}, ctx ${p.voluntary_ctx_switches}/${p.involuntary_ctx_switches}${p.syscalls_per_request !== null ? `, ${fmtNum(p.syscalls_per_request)} syscalls/req` : ""}`).join("; "),
      r.ok ? "ok" : `FAILED: ${r.failure ?? "unknown"}`,
    ]),
  );
  const charts = [...cpuCharts(report), ...latencyCharts(report)];
  const failed = report.summary.failed_runs;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>mesh ab — ${esc(o.transports.join(" vs "))}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f4f6}tr.sig-better td:nth-child(7){color:#047857;font-weight:600}tr.sig-worse td:nth-child(7){color:#b91c1c;font-weight:600}tr.nonsig td:nth-child(7){color:#6b7280}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e5e7eb;background:#fff}
.chart-title{font-size:13px;font-weight:600}.tick,.legend{font-size:11px;fill:#374151}.axis-label{font-size:12px;fill:#111}
.grid{stroke:#eee}.axis{stroke:#9ca3af}.errorbar{stroke-width:2}
.failed{color:#b91c1c;font-weight:600}.meta{color:#374151}
</style></head>
<body>
<h1>mesh ab — ${esc(o.transports.join(" vs "))}</h1>
<p class="meta">Config <code>${esc(report.config)}</code>; load: ${esc(report.target.description)};
open loop (latency from each call's intended send time), ${report.target.kind === "grpc" ? `${o.connections} gRPC connections, ` : ""}${o.duration_seconds} s measured after ${o.warmup_seconds} s warm-up,
${o.reps} rep(s) with transports interleaved per rep. Machine: ${report.machine.cpus} CPU (${esc(report.machine.cpu_model)}), Linux ${esc(report.machine.kernel)}, Bun ${esc(report.machine.bun)}, load average ${report.machine.load_average.start.toFixed(2)} → ${report.machine.load_average.end.toFixed(2)}.
Started ${esc(report.started_at)}, finished ${esc(report.finished_at)}.</p>
${failed > 0 ? `<p class="failed">${failed} run(s) failed; they are left out of the summary and charts.</p>` : ""}
<h2>Summary: vCPU per 1,000 rps, saving vs ${esc(report.summary.baseline)}</h2>
<p>vCPU counts every app and sidecar process of the mesh (all threads, /proc) during the measured window. Savings pair rep r of a transport with rep r of the baseline; intervals are 95% t-intervals across reps. Green = a significant saving, red = significantly more CPU than the baseline, grey = not significant.</p>
<table><thead>${row(["transport", "rate", "payload", "achieved rps", "vCPU/1k rps [95% CI]", "app / sidecar", `saving vs ${report.summary.baseline} [95% CI]`, "verdict", "p50", "p99", "p99.9", "reps ok"], "th")}</thead>
<tbody>${summaryRows.join("\n")}</tbody></table>
${
  report.summary.idle.length
    ? `<h2>Idle CPU (no load, measured once after start-up)</h2><table><thead>${row(["transport", "vCPU (all apps + sidecars)", "per process"], "th")}</thead><tbody>${report.summary.idle
        .map((i) => row([i.transport, fmtNum(i.vcpu), i.by_process.map((p) => `${p.pod}/${p.role} ${fmtNum(p.vcpu)}`).join("; ")]))
        .join("")}</tbody></table>`
    : ""
}
<h2>Charts</h2>
<div class="charts">
${charts.join("\n")}
</div>
<h2>Runs</h2>
<table><thead>${row(["run", "in use", "achieved rps", "errors", "vCPU/1k rps", "p50", "p90", "p99", "p99.9", "per process", "status"], "th")}</thead>
<tbody>${runRows.join("\n")}</tbody></table>
${report.summary.notes.length ? `<h2>Notes</h2><ul>${report.summary.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>` : ""}
<script>
// Marks how many charts the browser actually laid out (non-empty bounding box): read by the render test.
document.body.dataset.chartsRendered = String([...document.querySelectorAll("svg.chart")].filter((s) => s.getBBox().width > 0).length);
document.body.dataset.chartsTotal = String(document.querySelectorAll("svg.chart").length);
</script>
</body></html>
`;
}
