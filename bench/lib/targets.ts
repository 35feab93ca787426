// The issues' benchmark targets, checked against the rows of this run (human output only; the JSON
// array stays one row per measurement). A target whose rows are missing is reported as not measured.
import type { BenchRow } from "./rows.ts";

export interface TargetResult {
  issue: number;
  target: string;
  measured: string;
  met: boolean | undefined;
}

type Pick = (r: BenchRow) => boolean;
const find = (rows: BenchRow[], p: Pick) => rows.find(p);
const is = (transport: string, mode: string, spin?: string): Pick => (r) =>
  r.transport === transport && r.mode === mode && (spin === undefined || r.spin === spin) && r.syscalls_per_call === undefined;

function f(v: number | null | undefined, d = 2): string {
  return v == null ? "—" : v.toFixed(d);
}

/**
 * What the RPC floor (the RPC layer alone, in one process, no IPC, 64 in flight) implies for the "shm ≤ 1/4
 * of uds" target: every transport pays at least the floor per call, so a floor above a quarter of uds's
 * cost puts the target out of any transport's reach.
 */
export function floorNote(floorUs: number, shmUs: number, udsUs: number): string {
  const quarter = udsUs / 4;
  const above = `leaving uds ${f(udsUs - floorUs)} and shm ${f(shmUs - floorUs)} µs above it`;
  const verdict =
    floorUs > quarter
      ? "no transport can reach 1/4 here"
      : `1/4 of uds (${f(quarter)} µs) leaves a transport ${f(quarter - floorUs)} µs per call above the floor`;
  return `; the RPC layer alone (no IPC) costs ${f(floorUs)} µs = ${f(floorUs / udsUs)}× uds, ${above}: ${verdict}`;
}

export function checkTargets(rows: BenchRow[]): TargetResult[] {
  const out: TargetResult[] = [];
  const add = (issue: number, target: string, measured: string, met: boolean | undefined) => out.push({ issue, target, measured, met });

  const cUds = find(rows, is("c-uds", "closed-loop"));
  const uds = find(rows, is("uds", "closed-loop"));
  if (cUds && uds && uds.median_us != null && cUds.median_us != null) {
    const r = uds.median_us / cUds.median_us;
    add(2, "uds round trip ≤ 3× C Unix socket", `${f(uds.median_us)} µs vs ${f(cUds.median_us)} µs = ${f(r)}×`, r <= 3);
  } else add(2, "uds round trip ≤ 3× C Unix socket", "not measured", undefined);
  if (cUds && uds && uds.cpu_us_per_call != null && cUds.cpu_us_per_call != null) {
    const r = uds.cpu_us_per_call / cUds.cpu_us_per_call;
    add(2, "uds CPU per call ≤ 3× C's", `${f(uds.cpu_us_per_call)} µs vs ${f(cUds.cpu_us_per_call)} µs = ${f(r)}×`, r <= 3);
  } else add(2, "uds CPU per call ≤ 3× C's", "not measured", undefined);

  const shmPipe = find(rows, is("shm", "pipelined", "off"));
  const udsPipe = find(rows, is("uds", "pipelined"));
  if (shmPipe?.calls_per_s != null) add(3, "shm pipelined (64 in flight) ≥ 300,000 calls/s", `${Math.round(shmPipe.calls_per_s).toLocaleString("en-US")} calls/s`, shmPipe.calls_per_s >= 300_000);
  else add(3, "shm pipelined (64 in flight) ≥ 300,000 calls/s", "not measured", undefined);
  if (shmPipe?.cpu_us_per_call != null && udsPipe?.cpu_us_per_call != null) {
    const r = shmPipe.cpu_us_per_call / udsPipe.cpu_us_per_call;
    // The verdict is the measured ratio; the RPC floor (when it ran) says what any transport could reach.
    const floor = rows.find((x) => x.level === "rpc-floor" && x.mode === "pipelined")?.cpu_us_per_call;
    const measured = `${f(shmPipe.cpu_us_per_call)} vs ${f(udsPipe.cpu_us_per_call)} µs = ${f(r)}×${floor != null ? floorNote(floor, shmPipe.cpu_us_per_call, udsPipe.cpu_us_per_call) : ""}`;
    add(3, "shm pipelined CPU per call ≤ 1/4 of uds's", measured, r <= 0.25);
  } else add(3, "shm pipelined CPU per call ≤ 1/4 of uds's", "not measured", undefined);

  const shmClosed = find(rows, is("shm", "closed-loop", "off"));
  if (shmClosed?.median_us != null && uds?.median_us != null) {
    add(3, "shm round trip (spin off) ≤ uds's", `${f(shmClosed.median_us)} µs vs ${f(uds.median_us)} µs`, shmClosed.median_us <= uds.median_us);
  } else add(3, "shm round trip (spin off) ≤ uds's", "not measured", undefined);
  // Judged on the default setting (spin auto) when it ran; every other spinning row is shown beside it.
  const spinRows = rows.filter((r) => r.transport === "shm" && r.mode === "closed-loop" && r.spin !== undefined && r.spin !== "off" && r.median_us != null);
  const shmSpin = spinRows.find((r) => r.spin === "auto") ?? spinRows[0];
  const otherSpins = spinRows.filter((r) => r !== shmSpin).map((r) => `; spin ${r.spin}: ${f(r.median_us!)} µs`).join("");
  if (shmSpin?.median_us != null) add(3, "shm round trip with spin on and a free core ≤ 2 µs", `${f(shmSpin.median_us)} µs (spin ${shmSpin.spin}, ${shmSpin.placement}${otherSpins})`, shmSpin.median_us <= 2);
  else add(3, "shm round trip with spin on and a free core ≤ 2 µs", "not measured", undefined);

  for (const [rate, goal] of [[10_000, 0.7], [50_000, 0.3]] as const) {
    const s = rows.find((r) => r.transport === "shm" && r.target_calls_per_s === rate);
    const u = rows.find((r) => r.transport === "uds" && r.target_calls_per_s === rate);
    const label = `shm CPU per 1,000 calls at ${rate / 1000}k/s ≤ ${goal}× uds`;
    if (s?.cpu_ms_per_1000_calls != null && u?.cpu_ms_per_1000_calls != null) {
      const r = s.cpu_ms_per_1000_calls / u.cpu_ms_per_1000_calls;
      // A row that fell behind its offered rate measured something else. shm behind where uds kept up
      // is a miss in itself; uds behind leaves nothing to compare with.
      const measured = `${f(s.cpu_ms_per_1000_calls)} vs ${f(u.cpu_ms_per_1000_calls)} ms = ${f(r)}×`;
      if (u.note) add(3, label, `${measured} — no verdict: uds fell behind the rate${s.note ? " (and so did shm)" : ""}`, undefined);
      else if (s.note) add(3, label, `${measured} — shm fell behind the rate uds sustained (${Math.round(s.calls_per_s ?? 0)} calls/s)`, false);
      else add(3, label, measured, r <= goal);
    } else add(3, label, "not measured", undefined);
  }

  // Judged on the default spin setting (auto, each process on its own core); spin off, both on one
  // CPU (every switch between the processes is a park and a doorbell) is shown beside it.
  const sysRows = rows.filter((r) => r.transport === "shm" && r.syscalls_per_call !== undefined);
  const sys = sysRows.find((r) => r.spin === "auto") ?? sysRows[0];
  const others = sysRows.filter((r) => r !== sys).map((r) => `; spin ${r.spin}, ${r.placement}: ${f(r.syscalls_per_call!, 3)}`).join("");
  if (sys?.syscalls_per_call !== undefined) {
    add(3, "shm syscalls per call under pipelined load < 0.05", `${f(sys.syscalls_per_call, 3)} (spin ${sys.spin}, ${sys.placement}; ${sys.syscalls_method})${others}`, sys.syscalls_per_call < 0.05);
  } else add(3, "shm syscalls per call under pipelined load < 0.05", "not measured", undefined);

  // RPAL's figure is a message between two processes: judged on our transport's messages (the default
  // spin setting when it ran), with the same message as a unary RPC through the channel shown beside it.
  const spinningOneWay = (r: BenchRow) => r.transport === "shm" && r.mode === "one-way" && r.spin !== undefined && r.spin !== "off" && r.cycles_one_way !== undefined;
  const messageRows = rows.filter((r) => spinningOneWay(r) && r.level === "transport");
  const ow = messageRows.find((r) => r.spin === "auto") ?? messageRows[0];
  const cyc = (r: BenchRow) => `${r.cycles_one_way!.toLocaleString("en-US")} cycles mean (median ${r.cycles_one_way_median?.toLocaleString("en-US")})`;
  const besides = [
    ...messageRows.filter((r) => r !== ow).map((r) => `; spin ${r.spin}: ${cyc(r)}`),
    ...rows.filter((r) => spinningOneWay(r) && r.level === undefined).map((r) => `; as a unary RPC, spin ${r.spin}: ${cyc(r)}`),
  ].join("");
  const label = "shm one-way message (spin on) < RPAL's published 1,703 cycles";
  if (ow) add(3, label, `${cyc(ow)} (spin ${ow.spin}), costing ${f(ow.cpu_us_per_call)} µs CPU per message (both processes)${besides}`, ow.cycles_one_way! < 1703);
  else add(3, label, "not measured", undefined);
  return out;
}

export function renderTargets(results: TargetResult[]): string {
  const notMeasured = (t: TargetResult) => t.measured === "not measured";
  const missing = results.filter(notMeasured).length;
  const lines = results
    .filter((t) => !notMeasured(t))
    .map((t) => `${t.met === undefined ? "  ?  " : t.met ? " met " : " MISS"}  #${t.issue} ${t.target}: ${t.measured}`);
  if (missing > 0) lines.push(`  (${missing} target(s) not measured in this run: their rows were not selected or not available)`);
  return lines.join("\n");
}
