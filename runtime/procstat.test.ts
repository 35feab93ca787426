import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { TestResources } from "../test/helpers.ts";
import { ProcessTracker, windowFigures } from "./procstat.ts";

const res = new TestResources();
afterEach(() => res.cleanup());

/** A fake /proc with one process whose threads we script. */
function fakeProc(root: string, pid: number) {
  const base = join(root, String(pid));
  mkdirSync(join(base, "task"), { recursive: true });
  return {
    stat(utimeTicks: number, stimeTicks: number, rssPages: number) {
      // fields after "(name) ": state(3) … utime(14) stime(15) … rss(24)
      const f = Array.from({ length: 50 }, () => "0");
      f[0] = "S";
      f[11] = String(utimeTicks);
      f[12] = String(stimeTicks);
      f[21] = String(rssPages);
      writeFileSync(join(base, "stat"), `${pid} (bun (weird) name) ${f.join(" ")}\n`);
    },
    thread(tid: number, runNs: number, vol: number, invol: number) {
      mkdirSync(join(base, "task", String(tid)), { recursive: true });
      writeFileSync(join(base, "task", String(tid), "schedstat"), `${runNs} 0 0\n`);
      writeFileSync(join(base, "task", String(tid), "status"), `Name:\tbun\nvoluntary_ctxt_switches:\t${vol}\nnonvoluntary_ctxt_switches:\t${invol}\n`);
    },
    exit(tid: number) {
      rmSync(join(base, "task", String(tid)), { recursive: true });
    },
  };
}

const BURN = `const fs = require("fs"); const own = () => Number(fs.readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[0]); const t0 = own(); while (own() - t0 < 150e6) {} postMessage(1);`;

describe("ProcessTracker", () => {
  test("a thread that exits inside the window keeps its counters: no negative deltas", () => {
    const root = res.scratchDir("fakeproc-");
    const p = fakeProc(root, 42);
    p.stat(10, 5, 100);
    p.thread(42, 100_000_000, 10, 1);
    p.thread(43, 50_000_000, 500, 3); // a worker thread
    const t = new ProcessTracker(42, root);
    const start = t.poll();
    p.thread(43, 70_000_000, 700, 4);
    const mid = t.poll();
    p.exit(43); // the worker exits; summing live threads would lose its 70 ms and 700 switches
    p.thread(42, 130_000_000, 20, 2);
    p.stat(21, 6, 120);
    const end = t.poll();
    expect(mid.schedNs).toBe(170_000_000);
    const w = windowFigures(42, start, end);
    expect(w.cpuNs).toBe(120_000_000); // max(ticks: 120 ms, sched: 50 ms)
    expect(w.voluntaryCtxSwitches).toBe(210);
    expect(w.involuntaryCtxSwitches).toBe(2);
    expect(w.rssBytes).toBe(120 * 4096);
  });

  test("ns-resolution schedstat wins over 10 ms ticks for a nearly idle process", () => {
    const root = res.scratchDir("fakeproc-");
    const p = fakeProc(root, 7);
    p.stat(3, 0, 10);
    p.thread(7, 30_000_000, 1, 0);
    const t = new ProcessTracker(7, root);
    const a = t.poll();
    p.thread(7, 31_500_000, 2, 0);
    const b = t.poll();
    expect(windowFigures(7, a, b).cpuNs).toBe(1_500_000);
  });

  test("a reused tid is counted as a new thread, not as a counter going backwards", () => {
    const root = res.scratchDir("fakeproc-");
    const p = fakeProc(root, 9);
    p.stat(0, 0, 10);
    p.thread(9, 10, 1, 0);
    p.thread(10, 5_000, 50, 0);
    const t = new ProcessTracker(9, root);
    const a = t.poll();
    p.thread(10, 1_000, 5, 0); // thread 10 exited and a new thread got the same tid
    const b = t.poll();
    expect(b.schedNs - a.schedNs).toBe(1_000);
    expect(b.voluntary - a.voluntary).toBe(5);
  });

  test("a process that is gone throws naming the pid", () => {
    expect(() => new ProcessTracker(2 ** 22 + 7).poll()).toThrow(/process 4194311 is gone/);
  });

  test("a real process whose worker thread burns CPU and exits inside the window", async () => {
    const child = res.spawnBun([
      "-e",
      // The worker burns 150 ms of its own thread's CPU (not wall time, which depends on the machine's load).
      `console.log("up"); process.stdin.on("data", () => { const w = new Worker(URL.createObjectURL(new Blob([${JSON.stringify(BURN)}]))); w.onmessage = () => { w.terminate(); console.log("done"); }; });`,
    ], { stdin: "pipe" });
    await child.waitForLine(/^up$/);
    const t = new ProcessTracker(child.proc.pid);
    const start = t.poll();
    const poller = setInterval(() => t.poll(), 20);
    (child.proc.stdin as import("bun").FileSink).write("go\n");
    await child.waitForLine(/^done$/);
    clearInterval(poller);
    const end = t.poll();
    const w = windowFigures(child.proc.pid, start, end);
    expect(w.cpuNs).toBeGreaterThanOrEqual(100_000_000); // the worker's busy loop is not lost
    expect(w.voluntaryCtxSwitches).toBeGreaterThanOrEqual(0);
  });
});
