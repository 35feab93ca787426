// `mesh ab --quick` end to end: real mesh up per transport, real sidecars and apps, a real grpc-js load
// generator, /proc figures, and the written report checked for sanity and rendered in headless Chromium.
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { decodeFromCompressedBase64 } from "hdr-histogram-js";
import type { AbReport } from "../mesh/ab/report-types.ts";
import { chartMarks, dumpDom } from "./ab-chromium.ts";
import { leakedShmSegments, TestResources, waitFor, type Spawned } from "./helpers.ts";

const res = new TestResources();
let running: Spawned | undefined;

/** Every live descendant of `pid` (from /proc/<pid>/stat's ppid field). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [child, pp] of parent) if (pp === p) (out.push(child), walk(child));
  };
  walk(pid);
  return out;
}

afterEach(async () => {
  // ab stops its pods on SIGTERM; if a failed test leaves it running, give it that chance first, then
  // SIGKILL whatever it started (it spawned them, so they are ours), then the usual cleanup.
  if (running && running.proc.exitCode === null && running.proc.signalCode === null) {
    const tree = descendants(running.proc.pid);
    running.proc.kill("SIGTERM");
    await waitFor(() => running!.proc.exitCode !== null || running!.proc.signalCode !== null, { timeoutMs: 30_000, what: "mesh ab to stop" }).catch(() => undefined);
    for (const pid of tree) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
  running = undefined;
  await res.cleanup();
});

async function runAb(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  running = res.spawnBun(["mesh/cli/main.ts", "ab", ...args]);
  const proc = running.proc;
  await waitFor(() => proc.exitCode !== null || proc.signalCode !== null, { timeoutMs, intervalMs: 100, what: `mesh ab ${args.join(" ")} to finish` }).catch((e) => {
    throw new Error(`${(e as Error).message}\n--- output ---\n${running!.output()}`);
  });
  return { code: proc.exitCode, output: running.output() };
}

function checkSane(report: AbReport, expectTransports: string[]): void {
  expect(report.options.transports).toEqual(expectTransports);
  expect(report.summary.failed_runs).toBe(0);
  const reps = report.options.reps;
  expect(report.runs.length).toBe(expectTransports.length * reps * report.options.rates_rps.length * report.options.payload_bytes.length);
  // interleaved: A B A B …
  expect(report.runs.map((r) => r.transport)).toEqual(Array.from({ length: report.runs.length }, (_, i) => expectTransports[i % expectTransports.length]!));
  for (const r of report.runs) {
    const where = `${r.id}: ${JSON.stringify(r)}`;
    expect(r.ok, where).toBe(true);
    expect(r.transport_in_use, where).toBe(r.transport);
    expect(r.vcpu, where).toBeGreaterThan(0);
    expect(r.vcpu_per_1000_rps, where).toBeGreaterThan(0);
    expect(Math.abs(r.achieved_rps - r.rate_rps) / r.rate_rps, where).toBeLessThanOrEqual(0.1);
    const l = r.latency_us;
    const hist = decodeFromCompressedBase64(r.latency_hdr);
    expect(hist.totalCount, where).toBe(r.calls - r.errors); // the full distribution travels with the run
    expect(0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, where).toBe(true);
    // every pod's app and sidecar, each measured on its own
    const roles = r.processes.map((p) => `${p.pod}/${p.role}`).sort();
    expect(roles, where).toEqual(["frontend/app", "frontend/sidecar", "greeter/app", "greeter/sidecar"]);
    for (const p of r.processes) {
      expect(p.rss_bytes, where).toBeGreaterThan(1e6);
      expect(p.cpu_seconds, where).toBeGreaterThanOrEqual(0);
    }
  }
  // idle CPU: one figure per transport, covering the same four processes
  expect(report.summary.idle.map((i) => i.transport)).toEqual(expectTransports);
  for (const i of report.summary.idle) {
    expect(i.vcpu).toBeGreaterThanOrEqual(0);
    expect(i.by_process.length).toBe(4);
  }
  for (const g of report.summary.groups) {
    if (g.transport === report.summary.baseline) expect(g.saving_vs_baseline).toBeNull();
    else {
      const s = g.saving_vs_baseline!;
      expect(s.pairs).toBe(reps);
      if (reps < 2) {
        expect(s.fraction.low).toBeNull(); // one pair has no interval and cannot be significant
        expect(s.significant).toBe(false);
      } else {
        expect(s.fraction.low! <= s.fraction.mean && s.fraction.mean <= s.fraction.high!).toBe(true);
        expect(s.significant).toBe(s.fraction.low! > 0 || s.fraction.high! < 0);
      }
    }
  }
}

describe("mesh ab", () => {
  test("--quick completes, writes a sane report.json and a report.html Chromium renders with its charts", async () => {
    const shmBefore = new Set(leakedShmSegments());
    const out = res.scratchDir("ab-quick-");
    const { code, output } = await runAb(["--quick", "--out", out], 90_000);
    expect(code, output).toBe(0);
    for (const f of ["report.json", "report.md", "report.html"]) expect(existsSync(join(out, f)), f).toBe(true);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as AbReport;
    checkSane(report, ["uds", "shm"]);
    expect(report.target.kind).toBe("grpc");
    expect(output).toContain("saving"); // the terminal summary
    const dom = await dumpDom(join(out, "report.html"));
    const marks = chartMarks(dom);
    expect(marks.total).toBe(3); // CPU per 1k rps and total CPU vs rate, latency percentiles
    expect(marks.rendered).toBe(3);
    // nothing left running and no shared-memory segment left behind
    expect(descendants(running!.proc.pid)).toEqual([]);
    expect(leakedShmSegments().filter((s) => !shmBefore.has(s))).toEqual([]);
  }, 120_000);

  test("--http-get drives the full path through the frontend app and both sidecars", async () => {
    const out = res.scratchDir("ab-http-");
    const { code, output } = await runAb(
      ["--quick", "--reps", "1", "--duration", "2s", "--warmup", "500ms", "--http-get", "http://127.0.0.1:8080/hello?name={payload}", "--out", out],
      60_000,
    );
    expect(code, output).toBe(0);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as AbReport;
    checkSane(report, ["uds", "shm"]);
    expect(report.target).toMatchObject({ kind: "http", pod: "frontend" });
    // the frontend's sidecar carried the calls, so it used CPU (with gRPC into greeter it would idle)
    for (const r of report.runs) expect(r.processes.find((p) => p.pod === "frontend" && p.role === "sidecar")!.cpu_seconds).toBeGreaterThan(0);
    expect(report.summary.groups.find((g) => g.transport === "shm")!.saving_vs_baseline!.verdict).toBe("not enough reps for an interval");
  }, 90_000);

  test("a pod process that dies mid-session fails the runs that saw it, and ab exits 1 with the reason", async () => {
    const out = res.scratchDir("ab-crash-");
    running = res.spawnBun(["mesh/cli/main.ts", "ab", "--quick", "--duration", "2s", "--warmup", "500ms", "--out", out]);
    const ab = running;
    await ab.waitForLine(/^\[1\/4\]/, 60_000); // the first run has finished
    // Kill every greeter app this ab started (both transports'); mesh up restarts them with new pids.
    const greeters = descendants(ab.proc.pid).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").some((a) => a.endsWith("greeter.ts"));
      } catch {
        return false;
      }
    });
    expect(greeters.length).toBe(2);
    for (const pid of greeters) process.kill(pid, "SIGKILL");
    await waitFor(() => ab.proc.exitCode !== null, { timeoutMs: 60_000, intervalMs: 100, what: "mesh ab to finish" });
    expect(ab.proc.exitCode, ab.output()).toBe(1);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as AbReport;
    expect(report.runs.length).toBe(4);
    expect(report.runs[0]!.ok).toBe(true);
    const failed = report.runs.filter((r) => !r.ok);
    expect(failed.length).toBeGreaterThanOrEqual(1);
    for (const r of failed) expect(r.failure).toMatch(/greeter\/app (was restarted|\(pid \d+\) could not be sampled)|calls failed/);
    expect(report.summary.failed_runs).toBe(failed.length);
    expect(ab.output()).toMatch(/mesh ab: \d+ run\(s\) failed/);
    expect(existsSync(join(out, "logs"))).toBe(true); // the pods' logs are kept to explain the failure
  }, 120_000);

  test("pods that cannot start: every run fails with mesh up's reason, exit 1, logs kept, nothing left running", async () => {
    const out = res.scratchDir("ab-nostart-");
    const { code, output } = await runAb(["mesh/ab/testdata/sidecar-fails.yaml", "--quick", "--reps", "1", "--out", out], 60_000);
    expect(code, output).toBe(1);
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as AbReport;
    expect(report.runs.map((r) => r.ok)).toEqual([false, false]);
    for (const r of report.runs) expect(r.failure).toMatch(/pods for (uds|shm) did not start: .*cannot load proto .*bad\.proto/s);
    expect(readdirSync(join(out, "logs")).sort()).toEqual(["shm", "shm-mesh-up.log", "uds", "uds-mesh-up.log"]);
    expect(descendants(running!.proc.pid)).toEqual([]);
  }, 90_000);

  test("Ctrl-C mid-session stops the pods, writes a partial report and exits 130", async () => {
    const out = res.scratchDir("ab-int-");
    running = res.spawnBun(["mesh/cli/main.ts", "ab", "--quick", "--duration", "2s", "--warmup", "500ms", "--out", out]);
    const ab = running;
    await ab.waitForLine(/^\[1\/4\]/, 60_000);
    const tree = descendants(ab.proc.pid);
    expect(tree.length).toBeGreaterThan(8); // two mesh up, four pods each, a load generator
    ab.proc.kill("SIGINT");
    await waitFor(() => ab.proc.exitCode !== null, { timeoutMs: 40_000, intervalMs: 100, what: "mesh ab to stop" });
    expect(ab.proc.exitCode, ab.output()).toBe(130);
    expect(ab.output()).toContain("interrupted");
    const report = JSON.parse(readFileSync(join(out, "report.json"), "utf8")) as AbReport;
    expect(report.runs.length).toBeGreaterThanOrEqual(1);
    expect(report.runs.length).toBeLessThan(4);
    expect(report.summary.notes.join(" ")).toMatch(/interrupted after \d of 4 runs: this report is partial/);
    // everything it started is gone
    const alive = tree.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    expect(alive).toEqual([]);
  }, 120_000);

  const mistakes: [string[], RegExp][] = [
    [["--rates", "fast"], /mesh ab: --rates: "fast" is not a whole number/],
    [["--transports", "uds,tcp"], /unknown transport "tcp"/],
    [["/nonexistent/mesh.yaml"], /mesh\.yaml: cannot read mesh\.yaml: no such file/],
    [["--target", "nosuchpod"], /--target nosuchpod: no such pod .* \(pods: greeter, frontend\)/],
    [["--http-get", "http://127.0.0.1:9999/x?n={payload}"], /port 9999 is not an app port/],
    [["mesh/ab/testdata/broken-app.yaml", "--quick"], /broken-app\.yaml:6: pods\[0\]\.app\.command: .* is not an executable file/],
  ];
  for (const [args, re] of mistakes) {
    test(`${args.join(" ")} exits 2 with a message and starts nothing`, async () => {
      const { code, output } = await runAb(args, 20_000);
      expect(code, output).toBe(2);
      expect(output).toMatch(re);
      expect(output).not.toContain("    at "); // no stack trace for a user mistake
    });
  }
});
