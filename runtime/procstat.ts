// Per-process resource figures read from /proc, used by benchmarks, the A/B harness and /metrics.
// CPU comes from the sum of every thread's /proc/<pid>/task/<tid>/schedstat (nanoseconds, so short
// runs are measurable), cross-checked against /proc/<pid>/stat (10 ms ticks, but it also keeps the
// time of threads that already exited): the larger of the two is reported.
import { readFileSync, readdirSync } from "node:fs";

const CLOCK_TICK_NS = 10_000_000; // USER_HZ = 100 on every Linux we run on

export interface ProcSample {
  pid: number;
  /** CPU time of all threads, user + system, nanoseconds. */
  cpuNs: number;
  userNs: number;
  systemNs: number;
  rssBytes: number;
  voluntaryCtxSwitches: number;
  involuntaryCtxSwitches: number;
  threads: number;
  atMs: number;
}

function readStat(pid: number): { userNs: number; systemNs: number; rssBytes: number; threads: number } {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const num = (i: number) => Number(fields[i - 3]); // man proc numbers fields from 1; field 3 is fields[0]
  return {
    userNs: num(14) * CLOCK_TICK_NS,
    systemNs: num(15) * CLOCK_TICK_NS,
    threads: num(20),
    rssBytes: num(24) * 4096,
  };
}

function sumTasks(pid: number): { runNs: number; voluntary: number; involuntary: number } {
  let runNs = 0;
  let voluntary = 0;
  let involuntary = 0;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { runNs, voluntary, involuntary };
  }
  for (const tid of tids) {
    try {
      runNs += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, "utf8");
      voluntary += Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
      involuntary += Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      // the thread exited between readdir and read: its time is still in /proc/<pid>/stat
    }
  }
  return { runNs, voluntary, involuntary };
}

/** Samples one process. Throws if the process does not exist. */
export function sampleProcess(pid: number): ProcSample {
  const stat = readStat(pid);
  const tasks = sumTasks(pid);
  const tickNs = stat.userNs + stat.systemNs;
  return {
    pid,
    cpuNs: Math.max(tickNs, tasks.runNs),
    userNs: stat.userNs,
    systemNs: stat.systemNs,
    rssBytes: stat.rssBytes,
    voluntaryCtxSwitches: tasks.voluntary,
    involuntaryCtxSwitches: tasks.involuntary,
    threads: stat.threads,
    atMs: performance.now(),
  };
}

export interface ProcDelta {
  pid: number;
  cpuNs: number;
  wallMs: number;
  voluntaryCtxSwitches: number;
  involuntaryCtxSwitches: number;
  rssBytes: number;
}

export function diffSamples(before: ProcSample, after: ProcSample): ProcDelta {
  return {
    pid: after.pid,
    cpuNs: after.cpuNs - before.cpuNs,
    wallMs: after.atMs - before.atMs,
    voluntaryCtxSwitches: after.voluntaryCtxSwitches - before.voluntaryCtxSwitches,
    involuntaryCtxSwitches: after.involuntaryCtxSwitches - before.involuntaryCtxSwitches,
    rssBytes: after.rssBytes,
  };
}
