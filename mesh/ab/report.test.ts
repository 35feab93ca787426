import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderHtml } from "./report-html.ts";
import { renderMarkdown } from "./report-md.ts";
import type { AbReport } from "./report-types.ts";
import { writeReport } from "./report-write.ts";
import { summarize } from "./summary.ts";
import { sampleReport, sampleRun } from "./testdata/sample-report.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("summarize", () => {
  test("one group per transport × rate × payload, saving paired with the baseline", () => {
    const r = sampleReport();
    expect(r.summary.groups.length).toBe(8);
    const shm = r.summary.groups.find((g) => g.transport === "shm" && g.rate_rps === 1000 && g.payload_bytes === 32)!;
    expect(shm.saving_vs_baseline!.baseline).toBe("uds");
    expect(shm.saving_vs_baseline!.pairs).toBe(3);
    expect(shm.saving_vs_baseline!.fraction.mean).toBeGreaterThan(0.25);
    expect(shm.saving_vs_baseline!.significant).toBe(true);
    expect(shm.saving_vs_baseline!.verdict).toBe("significant saving");
    const uds = r.summary.groups.find((g) => g.transport === "uds" && g.rate_rps === 1000 && g.payload_bytes === 32)!;
    expect(uds.saving_vs_baseline).toBeNull();
    expect(uds.vcpu_per_1000_rps_by_role.app + uds.vcpu_per_1000_rps_by_role.sidecar).toBeCloseTo(uds.vcpu_per_1000_rps.mean, 9);
  });

  test("a failed run is counted but left out of means and pairs", () => {
    const g = sampleReport().summary.groups.find((x) => x.transport === "shm" && x.rate_rps === 5000 && x.payload_bytes === 1024)!;
    expect(g.reps_ok).toBe(2);
    expect(g.reps_failed).toBe(1);
    expect(g.vcpu_per_1000_rps.n).toBe(2);
    expect(g.saving_vs_baseline!.pairs).toBe(2);
  });

  test("a consistent loss says so, not just 'significant'", () => {
    const runs = [1, 2, 3].flatMap((rep) => [sampleRun("uds", 1000, 32, rep, 1.0 + rep / 100), sampleRun("shm", 1000, 32, rep, 1.3 + rep / 100)]);
    const g = summarize(runs, "uds").find((x) => x.transport === "shm")!;
    expect(g.saving_vs_baseline!.verdict).toBe("significant loss (uses more CPU)");
    expect(g.saving_vs_baseline!.fraction.high!).toBeLessThan(0);
  });

  test("noisy reps are marked not significant", () => {
    const runs = [
      sampleRun("uds", 1000, 32, 1, 1.0),
      sampleRun("uds", 1000, 32, 2, 1.0),
      sampleRun("shm", 1000, 32, 1, 0.7),
      sampleRun("shm", 1000, 32, 2, 1.25),
    ];
    const g = summarize(runs, "uds").find((x) => x.transport === "shm")!;
    expect(g.saving_vs_baseline!.significant).toBe(false);
    expect(g.saving_vs_baseline!.verdict).toBe("not significant (interval crosses 0)");
  });
});

describe("report writers", () => {
  test("writes report.json, report.md and report.html that describe the same runs", () => {
    const dir = mkdtempSync(join(tmpdir(), "ab-report-"));
    dirs.push(dir);
    const report = sampleReport();
    const paths = writeReport(join(dir, "nested", "out"), report);
    const json = JSON.parse(readFileSync(paths.json, "utf8")) as AbReport;
    expect(json.runs.length).toBe(report.runs.length);
    for (const r of json.runs) {
      for (const k of ["transport", "rate_rps", "achieved_rps", "payload_bytes", "vcpu_per_1000_rps", "latency_us", "errors", "processes"]) {
        expect(r).toHaveProperty(k);
      }
      expect(Object.keys(r.latency_us)).toEqual(expect.arrayContaining(["p50", "p90", "p99", "p999"]));
    }
    expect(json.summary.groups.length).toBe(8);
    const md = readFileSync(paths.md, "utf8");
    expect(md).toContain("## vCPU per 1,000 rps and saving vs uds");
    expect(md).toContain("## Idle CPU");
    expect(md).toMatch(/\| shm \| 0\.02 \| greeter\/sidecar 0\.02 \|/);
    expect(md).toContain("FAILED: sidecar of pod greeter exited (code 1)");
    // every run appears once in the runs table
    for (const r of report.runs) expect(md.split(`| ${r.id} |`).length).toBe(2);
    const html = readFileSync(paths.html, "utf8");
    expect(html.startsWith("<!doctype html>")).toBe(true);
    expect(html).not.toMatch(/<(link|img)\b|src=|href=/); // self-contained: nothing to fetch
  });

  test("html has a CPU-vs-rate pair of charts per payload and a latency chart per rate × payload", () => {
    const html = renderHtml(sampleReport());
    const ids = [...html.matchAll(/<svg class="chart" id="([^"]+)"/g)].map((m) => m[1]);
    expect(ids).toEqual([
      "cpu-per-1k-32",
      "cpu-total-32",
      "cpu-per-1k-1024",
      "cpu-total-1024",
      "latency-1000-32",
      "latency-1000-1024",
      "latency-5000-32",
      "latency-5000-1024",
    ]);
    // per-1k chart: 2 transports × 2 rates = 4 points, each uds/shm point with a CI error bar
    const cpu = html.slice(html.indexOf('id="cpu-per-1k-32"'), html.indexOf('id="cpu-total-32"'));
    expect(cpu.match(/<circle class="point"/g)!.length).toBe(4);
    expect(cpu.match(/<line class="errorbar"/g)!.length).toBe(4);
    // latency chart: 2 transports × 4 percentiles = 8 bars
    const lat = html.slice(html.indexOf('id="latency-1000-32"'), html.indexOf('id="latency-1000-1024"'));
    expect(lat.match(/<rect class="bar"/g)!.length).toBe(8);
  });

  test("hostile text from config or errors is escaped in html and cannot break the markdown table", () => {
    const report = sampleReport({ notes: ["<script>alert(1)</script>"] });
    report.runs[0]!.failure = "a|b\n<img src=x onerror=alert(1)>";
    report.runs[0]!.ok = false;
    report.config = "</code><script>x()</script>";
    const html = renderHtml(report);
    expect(html).not.toContain("<script>alert(1)");
    expect(html).not.toContain("<img src=x");
    expect(html).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
    expect(html.match(/<script>/g)!.length).toBe(1); // only the page's own
    const md = renderMarkdown(report);
    const line = md.split("\n").find((l) => l.includes("a\\|b"))!;
    expect(line).toBeDefined();
    expect(line).toContain("FAILED: a\\|b <img"); // newline flattened, pipe escaped
  });

  test("a report whose every run failed still renders (no NaN in the markup)", () => {
    const report = sampleReport();
    for (const r of report.runs) r.ok = false;
    report.summary.groups = summarize(report.runs, "uds");
    const html = renderHtml(report);
    expect(html).not.toContain("NaN");
    expect(renderMarkdown(report)).not.toContain("NaN");
  });

  test("an unwritable --out names the directory and the fix", () => {
    expect(() => writeReport("/proc/ab-cannot-write-here", sampleReport())).toThrow(/cannot create the report directory \/proc\/ab-cannot-write-here.*--out/);
  });
});
