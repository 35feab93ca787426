// The status table `mesh up` and `mesh status` print: one row per process.
import type { ProcState, Role } from "./state.ts";

export interface ProcessRow {
  pod: string;
  role: Role;
  pid: number | null;
  state: ProcState;
  transport: string | null;
  ports: string;
  restarts: number;
}

const HEADER = ["POD", "PROCESS", "PID", "STATE", "TRANSPORT", "PORTS", "RESTARTS"];

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function renderColumns(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
}

export function renderStatusTable(rows: ProcessRow[]): string[] {
  return renderColumns([
    HEADER,
    ...rows.map((r) => [r.pod, r.role, r.pid === null ? "-" : String(r.pid), r.state, r.transport ?? "-", r.ports || "-", String(r.restarts)]),
  ]);
}

export function sidecarPorts(inbound: string | null, admin: string | null): string {
  return [inbound ? `inbound ${inbound}` : "", admin ? `admin ${admin}` : ""].filter(Boolean).join(" ");
}
