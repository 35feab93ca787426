// wake-placement: where the scheduler runs each process a sidecar wakes, from a perf sched trace.
//
// Made for issue 5's CPU figure. About half of a sidecar's CPU at 1,000 rps is the kernel putting
// processes to sleep and waking them, twice per call per process. On a virtual machine a wake-up that
// lands on another, idle vCPU pays for an inter-processor interrupt (a hypercall under nested
// virtualisation). perf-jit.ts showed that the doorbell write waking the app cost ~3x as much as the
// TCP write waking the other sidecar. This script shows why: it lists, for each waker -> wakee pair,
// how often the wakee ran on the waker's CPU and how often on the other one, and each process's
// share of one CPU over the trace.
//
// Recipe (any fixed-rate load; here bench-mesh's mesh window):
//   perf record -e sched:sched_waking,sched:sched_wakeup,sched:sched_switch -a -o /tmp/s.data -- sleep 3
//   perf script -i /tmp/s.data -F comm,pid,tid,cpu,time,event,trace | \
//     bun bench/wake-placement.ts --pid <pid>=frontend-sidecar --pid <pid>=app ...
// Without --pid the six processes with the most run time are listed, named by comm/pid.

export const USAGE = "usage: perf script -F comm,pid,tid,cpu,time,event,trace | bun bench/wake-placement.ts [--pid <pid>=<label>]...";

/** One line of `perf script -F comm,pid,tid,cpu,time,event,trace`, e.g.
 *  `bun.exe  9316/9316  [001] 49345.1: sched:sched_waking: comm=bun pid=9281 prio=120 target_cpu=000` */
const LINE = /^\s*(.+?)\s+(\d+)\/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(sched_\w+):\s*(.*)$/;
const FIELD_PID = / pid=(\d+)/;
const TARGET_CPU = /target_cpu=(\d+)/;
const PREV_PID = /prev_pid=(\d+)/;
const NEXT_PID = /next_pid=(\d+)/;
const NEXT_COMM = /next_comm=(.+?) next_pid=/;

export interface PairStats {
  waker: string;
  wakee: string;
  wakes: number;
  /** The wakee was put on the CPU its waker was running on. */
  sameCpu: number;
}

export interface Report {
  seconds: number;
  pairs: PairStats[];
  /** Share of one CPU each named task ran for over the trace (from sched_switch). */
  runShare: Array<{ label: string; share: number }>;
  /** Lines that were not sched events (headers, other events, garbage). */
  skipped: number;
}

export class WakePlacement {
  /** tid -> label; empty means "label the busiest tasks at the end". */
  private readonly labels: Map<string, string>;
  private readonly comms = new Map<string, string>();
  /** Wakee tid -> waker tid and waker CPU, between sched_waking and sched_wakeup. */
  private readonly waking = new Map<string, { waker: string; cpu: number }>();
  private readonly pairs = new Map<string, PairStats & { wakerTid: string; wakeeTid: string }>();
  private readonly runningSince = new Map<string, number>();
  private readonly runTime = new Map<string, number>();
  private first = Number.NaN;
  private last = Number.NaN;
  private skipped = 0;

  constructor(labels: Map<string, string> = new Map()) {
    this.labels = labels;
  }

  add(line: string): void {
    const m = LINE.exec(line);
    if (!m) {
      if (line.trim() !== "") this.skipped++;
      return;
    }
    const [, comm, , tid, cpuText, timeText, event, trace] = m as unknown as string[];
    const t = Number(timeText);
    const cpu = Number(cpuText);
    if (Number.isNaN(this.first)) this.first = t;
    this.last = t;
    this.comms.set(tid!, comm!);
    if (event === "sched_waking") {
      const wakee = FIELD_PID.exec(trace!)?.[1];
      if (wakee !== undefined) this.waking.set(wakee, { waker: tid!, cpu });
    } else if (event === "sched_wakeup") {
      const wakee = FIELD_PID.exec(trace!)?.[1];
      const target = TARGET_CPU.exec(trace!)?.[1];
      const from = wakee === undefined ? undefined : this.waking.get(wakee);
      if (from === undefined || target === undefined) return;
      this.waking.delete(wakee!);
      const key = `${from.waker}>${wakee}`;
      let p = this.pairs.get(key);
      if (!p) {
        p = { waker: "", wakee: "", wakes: 0, sameCpu: 0, wakerTid: from.waker, wakeeTid: wakee! };
        this.pairs.set(key, p);
      }
      p.wakes++;
      if (Number(target) === from.cpu) p.sameCpu++;
    } else if (event === "sched_switch") {
      const prev = PREV_PID.exec(trace!)?.[1];
      const next = NEXT_PID.exec(trace!)?.[1];
      const nextComm = NEXT_COMM.exec(trace!)?.[1];
      if (prev !== undefined) {
        const since = this.runningSince.get(prev);
        if (since !== undefined) this.runTime.set(prev, (this.runTime.get(prev) ?? 0) + t - since);
        this.runningSince.delete(prev);
      }
      if (next !== undefined) {
        this.runningSince.set(next, t);
        if (nextComm !== undefined && !this.comms.has(next)) this.comms.set(next, nextComm);
      }
    } else {
      this.skipped++;
    }
  }

  report(): Report {
    const seconds = Number.isNaN(this.first) ? 0 : this.last - this.first;
    const labels = this.labels.size > 0 ? this.labels : this.busiest(6);
    const pairs: PairStats[] = [];
    for (const p of this.pairs.values()) {
      const waker = labels.get(p.wakerTid);
      const wakee = labels.get(p.wakeeTid);
      if (waker === undefined || wakee === undefined) continue;
      pairs.push({ waker, wakee, wakes: p.wakes, sameCpu: p.sameCpu });
    }
    pairs.sort((a, b) => b.wakes - a.wakes);
    const runShare = [...labels].map(([tid, label]) => ({ label, share: seconds > 0 ? (this.runTime.get(tid) ?? 0) / seconds : 0 }));
    return { seconds, pairs, runShare, skipped: this.skipped };
  }

  /** The n tasks (idle tasks excluded) that ran longest, labelled comm/tid. */
  private busiest(n: number): Map<string, string> {
    const top = [...this.runTime]
      .filter(([tid]) => tid !== "0")
      .sort((a, b) => b[1] - a[1])
      .slice(0, n);
    return new Map(top.map(([tid]) => [tid, `${this.comms.get(tid) ?? "?"}/${tid}`]));
  }
}

export function render(r: Report): string {
  const out: string[] = [];
  out.push(`wake-ups between the listed processes over ${r.seconds.toFixed(2)} s (same CPU: the wakee ran where its waker ran)`);
  const w = Math.max(6, ...r.pairs.map((p) => Math.max(p.waker.length, p.wakee.length)));
  out.push(`${"waker".padEnd(w)}  ${"wakee".padEnd(w)}  ${"wakes".padStart(7)}  ${"per s".padStart(7)}  same CPU  other CPU`);
  for (const p of r.pairs) {
    const same = p.wakes ? (100 * p.sameCpu) / p.wakes : 0;
    const perS = r.seconds > 0 ? p.wakes / r.seconds : 0;
    out.push(
      `${p.waker.padEnd(w)}  ${p.wakee.padEnd(w)}  ${String(p.wakes).padStart(7)}  ${perS.toFixed(0).padStart(7)}  ${`${same.toFixed(0)} %`.padStart(8)}  ${`${(100 - same).toFixed(0)} %`.padStart(9)}`,
    );
  }
  if (r.pairs.length === 0) out.push("(no wake-ups between the listed processes: check the pids, and that the trace has sched_waking and sched_wakeup)");
  out.push(`run time, share of one CPU: ${r.runShare.map((s) => `${s.label} ${(100 * s.share).toFixed(1)} %`).join(", ")}`);
  if (r.skipped > 0) out.push(`(${r.skipped} lines were not sched_waking/sched_wakeup/sched_switch events and were skipped)`);
  return out.join("\n");
}

export function parseArgs(argv: string[]): Map<string, string> | "help" {
  const labels = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-h" || a === "--help") return "help";
    if (a !== "--pid") throw new Error(`unknown argument '${a}'\n${USAGE}`);
    const v = argv[++i];
    const m = v === undefined ? null : /^(\d+)=(.+)$/.exec(v);
    if (!m) throw new Error(`--pid needs <pid>=<label>, e.g. --pid 4242=frontend-sidecar; got '${v ?? ""}'`);
    labels.set(m[1]!, m[2]!);
  }
  return labels;
}

if (import.meta.main) {
  let labels: Map<string, string> | "help";
  try {
    labels = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`wake-placement: ${(e as Error).message}`);
    process.exit(2);
  }
  if (labels === "help") {
    console.log(USAGE);
    process.exit(0);
  }
  const wp = new WakePlacement(labels);
  for await (const line of console) wp.add(line);
  console.log(render(wp.report()));
}
