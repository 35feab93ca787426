// Per-process resource figures read from /proc, for benchmarks, the A/B harness and /metrics: CPU of
// all threads, RSS and context switches.
//
// Two sources, because neither is enough alone: /proc/<pid>/stat keeps the time of threads that
// already exited but counts in 10 ms ticks; each thread's /proc/<pid>/task/<tid>/schedstat counts
// nanoseconds but disappears with its thread. A single reading sums the live threads; a difference
// over a window must not (a Bun worker exiting inside the window made deltas negative: -486 switches,
// -6 ms), so ProcessTracker remembers every thread it has seen and keeps a dead thread's last counters.
// A window's CPU is the larger of the two deltas, both lower bounds of the truth.
import { readdirSync, readFileSync } from "node:fs";

const CLOCK_TICK_NS = 10_000_000; // USER_HZ = 100
const PAGE_BYTES = 4096;

interface ThreadCounters {
  runNs: number;
  voluntary: number;
  involuntary: number;
}

export interface TrackerReading {
  /** utime + stime of the whole process (exited threads included), 10 ms resolution. */
  tickNs: number;
  /** Sum over every thread ever seen of its last schedstat run time (ns resolution). */
  schedNs: number;
  voluntary: number;
  involuntary: number;
  rssBytes: number;
}

export interface WindowFigures {
  pid: number;
  cpuNs: number;
  voluntaryCtxSwitches: number;
  involuntaryCtxSwitches: number;
  rssBytes: number;
}

/** Fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses). */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

export class ProcessTracker {
  private threads = new Map<string, ThreadCounters>();

  constructor(
    readonly pid: number,
    private readonly procRoot = "/proc",
  ) {}

  /** Reads every live thread; throws (naming the pid) if the process is gone. */
  poll(): TrackerReading {
    const base = `${this.procRoot}/${this.pid}`;
    let stat: string[];
    try {
      stat = statFields(readFileSync(`${base}/stat`, "utf8"));
    } catch (e) {
      throw new Error(`process ${this.pid} is gone: ${(e as Error).message}`);
    }
    // man proc numbers fields from 1 and field 3 is stat[0]: utime 14, stime 15, rss 24.
    const tickNs = (Number(stat[11]) + Number(stat[12])) * CLOCK_TICK_NS;
    const rssBytes = Number(stat[21]) * PAGE_BYTES;
    let tids: string[] = [];
    try {
      tids = readdirSync(`${base}/task`);
    } catch {
      // the process exited between the two reads: keep what we had
    }
    for (const tid of tids) {
      try {
        const runNs = Number(readFileSync(`${base}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
        const status = readFileSync(`${base}/task/${tid}/status`, "utf8");
        const voluntary = Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
        const involuntary = Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
        const prev = this.threads.get(tid);
        // Counters only grow; a smaller value means the tid was reused by a new thread: count both.
        if (prev && (runNs < prev.runNs || voluntary < prev.voluntary)) this.threads.set(`${tid}@${this.threads.size}`, prev);
        if (Number.isFinite(runNs)) this.threads.set(tid, { runNs, voluntary, involuntary });
      } catch {
        // the thread exited between readdir and read: its last counters stay in the map
      }
    }
    let schedNs = 0;
    let voluntary = 0;
    let involuntary = 0;
    for (const t of this.threads.values()) {
      schedNs += t.runNs;
      voluntary += t.voluntary;
      involuntary += t.involuntary;
    }
    return { tickNs, schedNs, voluntary, involuntary, rssBytes };
  }
}

export function windowFigures(pid: number, start: TrackerReading, end: TrackerReading): WindowFigures {
  return {
    pid,
    cpuNs: Math.max(end.tickNs - start.tickNs, end.schedNs - start.schedNs, 0),
    voluntaryCtxSwitches: Math.max(0, end.voluntary - start.voluntary),
    involuntaryCtxSwitches: Math.max(0, end.involuntary - start.involuntary),
    rssBytes: end.rssBytes,
  };
}


export interface ProcSample extends TrackerReading {
  pid: number;
  /** CPU time of all threads, user + system, nanoseconds (the larger of the two sources). */
  cpuNs: number;
  atMs: number;
}

/** One reading of a process (throws if it is gone). For a window, keep a ProcessTracker instead. */
export function sampleProcess(pid: number, tracker = new ProcessTracker(pid)): ProcSample {
  const r = tracker.poll();
  return { ...r, pid, cpuNs: Math.max(r.tickNs, r.schedNs), atMs: performance.now() };
}

export interface ProcDelta extends WindowFigures {
  wallMs: number;
}

/**
 * The window between two samples. For windows in which threads may exit, take both samples from one
 * ProcessTracker (sampleProcess(pid, tracker)) so exited threads' counters are kept.
 */
export function diffSamples(before: ProcSample, after: ProcSample): ProcDelta {
  return { ...windowFigures(after.pid, before, after), wallMs: after.atMs - before.atMs };
}
