import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { parseArgs, render, WakePlacement } from "./wake-placement.ts";

// Lines as `perf script -F comm,pid,tid,cpu,time,event,trace` prints sched events.
const waking = (waker: string, tid: number, cpu: number, t: number, wakee: number) =>
  `  ${waker}  ${tid}/${tid}  [00${cpu}] ${t.toFixed(6)}:   sched:sched_waking: comm=x pid=${wakee} prio=120 target_cpu=00${cpu}`;
const wakeup = (waker: string, tid: number, cpu: number, t: number, wakee: number, target: number) =>
  `  ${waker}  ${tid}/${tid}  [00${cpu}] ${t.toFixed(6)}:   sched:sched_wakeup: comm=x pid=${wakee} prio=120 target_cpu=00${target}`;
const sw = (cpu: number, t: number, prev: number, next: number, nextComm = "bun.exe") =>
  `  swapper  0/0  [00${cpu}] ${t.toFixed(6)}:   sched:sched_switch: prev_comm=p prev_pid=${prev} prev_prio=120 prev_state=S ==> next_comm=${nextComm} next_pid=${next} next_prio=120`;

describe("wake-placement", () => {
  test("counts each waker -> wakee pair by whether the wakee ran on the waker's CPU", () => {
    const wp = new WakePlacement(new Map([["10", "sidecar"], ["20", "app"]]));
    // sidecar (CPU 0) wakes app: twice onto CPU 1, once onto CPU 0; app wakes sidecar on its own CPU.
    wp.add(waking("bun.exe", 10, 0, 1.0, 20));
    wp.add(wakeup("bun.exe", 10, 0, 1.000001, 20, 1));
    wp.add(waking("bun.exe", 10, 0, 1.1, 20));
    wp.add(wakeup("bun.exe", 10, 0, 1.100001, 20, 1));
    wp.add(waking("bun.exe", 10, 0, 1.2, 20));
    wp.add(wakeup("bun.exe", 10, 0, 1.200001, 20, 0));
    wp.add(waking("bun", 20, 1, 1.3, 10));
    wp.add(wakeup("bun", 20, 1, 1.300001, 10, 1));
    // a wake of an unlisted task is not reported
    wp.add(waking("bun.exe", 10, 0, 1.4, 99));
    wp.add(wakeup("bun.exe", 10, 0, 1.400001, 99, 1));
    const r = wp.report();
    expect(r.pairs).toEqual([
      { waker: "sidecar", wakee: "app", wakes: 3, sameCpu: 1 },
      { waker: "app", wakee: "sidecar", wakes: 1, sameCpu: 1 },
    ]);
    expect(r.seconds).toBeCloseTo(0.400001, 6);
    const text = render(r);
    expect(text).toContain("33 %");
    expect(text).toMatch(/sidecar\s+app\s+3\s+\d+\s+33 %\s+67 %/);
  });

  test("run time comes from sched_switch; without --pid the busiest tasks are listed by comm/tid", () => {
    const wp = new WakePlacement();
    wp.add(sw(0, 0.0, 0, 10, "bun.exe"));
    wp.add(sw(0, 0.5, 10, 20, "bun"));
    wp.add(sw(0, 0.6, 20, 0, "swapper/0"));
    wp.add(sw(0, 1.0, 0, 10, "bun.exe"));
    const r = wp.report();
    expect(r.runShare).toEqual([
      { label: "bun.exe/10", share: 0.5 },
      { label: "bun/20", share: expect.closeTo(0.1, 9) },
    ]);
  });

  test("lines that are not sched events are counted as skipped, not misread", () => {
    const wp = new WakePlacement(new Map([["10", "a"]]));
    wp.add("# ========");
    wp.add("garbage 1/1 [zz] x: sched:sched_waking:");
    wp.add("  bun  10/10  [000] 1.000000:   sched:sched_wake_idle_without_ipi: cpu=1");
    wp.add(wakeup("bun", 10, 0, 1.1, 20, 0)); // a wakeup with no waking before it is ignored
    wp.add("");
    const r = wp.report();
    expect(r.skipped).toBe(3);
    expect(r.pairs).toEqual([]);
    expect(render(r)).toContain("no wake-ups between the listed processes");
  });

  test("--pid takes <pid>=<label> and names a bad value", () => {
    expect(parseArgs(["--pid", "42=frontend", "--pid", "7=app"])).toEqual(new Map([["42", "frontend"], ["7", "app"]]));
    expect(parseArgs(["--help"])).toBe("help");
    expect(() => parseArgs(["--pid", "frontend"])).toThrow("--pid needs <pid>=<label>");
    expect(() => parseArgs(["--pids"])).toThrow("unknown argument '--pids'");
  });

  test("the CLI reads perf script output on stdin", async () => {
    const input = [waking("bun.exe", 10, 0, 1.0, 20), wakeup("bun.exe", 10, 0, 1.000001, 20, 1)].join("\n") + "\n";
    const proc = Bun.spawn([process.execPath, join(import.meta.dir, "wake-placement.ts"), "--pid", "10=sidecar", "--pid", "20=app"], {
      stdin: new Blob([input]),
      stdout: "pipe",
      stderr: "pipe",
    });
    const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
    expect(code).toBe(0);
    expect(out).toMatch(/sidecar\s+app\s+1\s+\d+\s+0 %\s+100 %/);
    const bad = Bun.spawn([process.execPath, join(import.meta.dir, "wake-placement.ts"), "--pid", "x"], { stdout: "pipe", stderr: "pipe" });
    const [err, badCode] = await Promise.all([new Response(bad.stderr).text(), bad.exited]);
    expect(badCode).toBe(2);
    expect(err).toContain("--pid needs <pid>=<label>");
  });
});
