// The human-readable report: one table, references first, every Bun row with its ratio to the C
// reference measured in the same run.
import type { BenchRow } from "./rows.ts";

function fmt(v: number | null | undefined, digits = 2): string {
  if (v == null || !Number.isFinite(v)) return "—";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return v.toFixed(digits);
}

function ratioCell(v: number | undefined): string {
  return v === undefined ? "" : `${v.toFixed(2)}×`;
}

export function renderTable(rows: BenchRow[]): string {
  const head = ["row", "transport", "mode", "placement", "median µs", "p99 µs", "calls/s", "CPU µs/call", "vs C (lat, cpu)", "extra"];
  const body = rows.map((r) => {
    const extra: string[] = [];
    if (r.cycles_one_way !== undefined) extra.push(`${fmt(r.cycles_one_way, 0)} cycles one-way (median ${fmt(r.cycles_one_way_median, 0)})`);
    if (r.target_calls_per_s === 0) extra.push(`idle: ${fmt(r.vcpu_at_rate, 3)} vCPU`);
    else if (r.target_calls_per_s !== undefined) {
      const net = r.cpu_ms_per_1000_calls_net !== undefined ? ` (${fmt(r.cpu_ms_per_1000_calls_net)} net of idle)` : "";
      extra.push(`@${fmt(r.target_calls_per_s, 0)}/s: ${fmt(r.cpu_ms_per_1000_calls)} ms CPU per 1k calls${net} = ${fmt(r.vcpu_at_rate, 3)} vCPU`);
    }
    if (r.syscalls_per_call !== undefined) {
      const top = r.syscalls_top ? ` [${Object.entries(r.syscalls_top).map(([n, v]) => `${n} ${v}`).join(", ")}]` : "";
      extra.push(`${fmt(r.syscalls_per_call, 3)} syscalls/call${top} (${r.syscalls_method})`);
    }
    if (r.ns_per_op !== undefined) extra.push(`${fmt(r.ns_per_op, 1)} ns/op`);
    if (r.in_flight !== undefined && r.in_flight > 1) extra.push(`${r.in_flight} in flight`);
    if (r.spin !== undefined) extra.push(`spin ${r.spin}`);
    if (r.note) extra.push(r.note);
    const vs = r.ref ? `${ratioCell(r.ratio_median) || "—"}, ${ratioCell(r.ratio_cpu) || "—"} (${r.ref})` : "";
    return [r.name, r.transport, r.mode, r.placement ?? "", fmt(r.median_us, 3), fmt(r.p99_us, 3), fmt(r.calls_per_s, 0), fmt(r.cpu_us_per_call, 3), vs, extra.join("; ")];
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 4 && i <= 7 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
