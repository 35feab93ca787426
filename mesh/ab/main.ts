// `mesh ab`: starts the pods once per transport (side by side, each on its own ports), then for every
// rate × payload × rep measures each transport in turn (A B A B …, so drift hits all alike) with an
// open-loop load generator in its own process, and writes report.json, report.md and report.html.
// Exit codes: 0 all runs ok, 1 some run failed (the report says which and why), 2 a usage or config
// mistake, 130 interrupted (a partial report is still written).
import { cpSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, release, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { ConfigError, loadConfig, type MeshConfig } from "../config/index.ts";
import { UserError } from "../supervisor/errors.ts";
import { preflight } from "../supervisor/preflight.ts";
import { grpcEntry, httpEntry, type Entry } from "./entry.ts";
import { AbUsageError, parseAbFlags, USAGE, type AbOptions, type TransportName } from "./flags.ts";
import { fmtInterval, fmtNum, fmtPct } from "./format.ts";
import { MeshInstance } from "./instance.ts";
import { Progress } from "./progress.ts";
import type { AbReport, IdleFigure, RunRecord } from "./report-types.ts";
import { writeReport } from "./report-write.ts";
import { failedRecord, measureRun, type RunSpec } from "./run.ts";
import { StraceSession, straceAvailable } from "./strace.ts";
import { chooseTransports } from "./transports.ts";
import { qualityNotes } from "./notes.ts";
import { summarize } from "./summary.ts";

const READY_TIMEOUT_MS = 60_000;

function planRuns(o: AbOptions, transports: string[]): Omit<RunSpec, "target">[] {
  const plan: Omit<RunSpec, "target">[] = [];
  for (const rate of o.ratesRps) {
    for (const payload of o.payloadBytes) {
      for (let rep = 1; rep <= o.reps; rep++) {
        for (const transport of transports) {
          plan.push({ transport, rateRps: rate, payloadBytes: payload, rep, warmupMs: o.warmupMs, durationMs: o.durationMs, timeoutMs: o.timeoutMs, maxErrorRate: o.maxErrorRate });
        }
      }
    }
  }
  return plan;
}

function machine(loadStart: number): AbReport["machine"] {
  const c = cpus();
  return { cpus: c.length, cpu_model: c[0]?.model ?? "unknown", kernel: release(), bun: Bun.version, load_average: { start: loadStart, end: loadavg()[0]! } };
}

function summaryLines(report: AbReport): string[] {
  const lines = report.summary.idle.map((i) => `idle (no load): ${i.transport.padEnd(5)} ${fmtNum(i.vcpu)} vCPU for all apps + sidecars`);
  lines.push(`vCPU per 1,000 rps (all apps + sidecars), saving vs ${report.summary.baseline} with 95% CI:`);
  for (const g of report.summary.groups) {
    const s = g.saving_vs_baseline;
    lines.push(
      `  ${g.transport.padEnd(5)} ${String(g.rate_rps).padStart(6)} rps ${String(g.payload_bytes).padStart(6)} B  ` +
        `${fmtInterval(g.vcpu_per_1000_rps, (v) => fmtNum(v)).padEnd(28)} ${s ? `saving ${fmtInterval(s.fraction, fmtPct)} — ${s.verdict}` : "(baseline)"}`,
    );
  }
  return lines;
}

export async function abMain(argv: string[]): Promise<number> {
  let o: AbOptions;
  let config: MeshConfig;
  let transports: TransportName[];
  let notes: string[];
  let entry: Entry;
  try {
    const parsed = parseAbFlags(argv);
    if (parsed.kind === "help") {
      process.stdout.write(USAGE);
      return 0;
    }
    o = parsed.options;
    config = loadConfig(o.configPath);
    // mesh up's own checks (commands, cwd, protos, certificates), against the user's file so the message
    // names it; ports are skipped (set to 0) because every transport runs on fresh ports anyway.
    const portless = structuredClone(config);
    for (const p of portless.pods) {
      if (p.sidecar.inbound) p.sidecar.inbound.port = 0;
      p.sidecar.admin.port = 0;
    }
    await preflight(portless, resolve(o.configPath));
    ({ transports, notes } = await chooseTransports(o));
    entry = o.httpGet ? httpEntry(o, config) : grpcEntry(o, config);
  } catch (e) {
    if (e instanceof AbUsageError || e instanceof ConfigError || e instanceof UserError) {
      process.stderr.write(`mesh ab: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const strace = o.strace ? straceAvailable() : null;
  if (o.strace && !strace) notes.push("--strace was given but strace is not installed (apt-get install strace): syscall counts are null");
  if (o.strace && strace) notes.push("strace was attached during the measured windows: its ptrace stops inflate CPU and latency, so compare traced runs only with traced runs");

  const plan = planRuns(o, transports);
  const progress = new Progress(plan.length);
  const abort = new AbortController();
  const onSignal = () => {
    if (!abort.signal.aborted) progress.note("mesh ab: interrupted — stopping the pods and writing a partial report");
    abort.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const startedAt = new Date().toISOString();
  const loadStart = loadavg()[0]!;
  const workDir = mkdtempSync(join(tmpdir(), "mesh-ab-"));
  const instances = new Map<string, MeshInstance>();
  const startFailures = new Map<string, string>();
  const runs: RunRecord[] = [];
  const idle: IdleFigure[] = [];
  const outDir = resolve(o.outDir);
  progress.note(`mesh ab: ${transports.join(" vs ")}; ${entry.describe}; ${plan.length} run(s) of ${(o.warmupMs + o.durationMs) / 1000} s`);
  try {
    for (const t of transports) {
      if (abort.signal.aborted) break;
      const t0 = Date.now();
      progress.note(`mesh ab: starting the pods of ${relative(process.cwd(), resolve(o.configPath))} with --transport ${t}`);
      // Two attempts: the free ports picked for the copy can be taken by another program before mesh up
      // binds them; a second copy gets new ones. A real problem fails both and is reported.
      for (let attempt = 1; attempt <= 2 && !abort.signal.aborted; attempt++) {
        const inst = await MeshInstance.prepare(t, join(workDir, `${t}-${attempt}`), config, o.configPath);
        instances.set(t, inst);
        try {
          await inst.start(READY_TIMEOUT_MS);
          startFailures.delete(t);
          progress.note(`mesh ab: ${t}: ${inst.processes().length} processes ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
          break;
        } catch (e) {
          startFailures.set(t, (e as Error).message);
          progress.note(`mesh ab: ${t}: could not start the pods${attempt === 1 ? " (retrying on new ports)" : ""}: ${(e as Error).message}`);
          await inst.stop().catch(() => undefined);
        }
      }
    }
    // Idle cost first (A B, like the runs): what each transport burns with no request at all.
    for (const t of transports) {
      const inst = instances.get(t);
      if (abort.signal.aborted || !inst || startFailures.has(t)) continue;
      const idleMs = Math.min(o.durationMs, 3000);
      progress.note(`mesh ab: ${t}: measuring idle CPU for ${idleMs / 1000} s`);
      const idleFig = await inst.measureIdle(idleMs);
      if (typeof idleFig === "string") notes.push(idleFig);
      else idle.push(idleFig);
    }
    const straceSession = strace ? new StraceSession(strace, workDir) : undefined;
    let index = 0;
    for (const spec of plan) {
      if (abort.signal.aborted) break;
      index++;
      const label = `${spec.transport.padEnd(4)} ${String(spec.rateRps).padStart(6)} rps ${String(spec.payloadBytes).padStart(5)} B rep ${spec.rep}/${o.reps}`;
      const inst = instances.get(spec.transport);
      let record: RunRecord;
      if (!inst || startFailures.has(spec.transport)) {
        record = failedRecord(spec, `pods for ${spec.transport} did not start: ${startFailures.get(spec.transport) ?? "unknown"}`, null);
      } else {
        progress.startRun(index, label, spec.warmupMs + spec.durationMs);
        record = await measureRun(inst, { ...spec, target: entry.targetFor(inst, spec.payloadBytes) }, straceSession, abort.signal);
      }
      if (abort.signal.aborted && !record.ok) break; // the run was cut short by the interrupt: not a result
      runs.push(record);
      progress.endRun(index, label, record);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await Promise.all([...instances.values()].map((i) => i.stop().catch(() => undefined)));
    if (runs.some((r) => !r.ok) || startFailures.size) {
      // Keep what explains a failure: each transport's mesh up output and its pods' logs.
      for (const [t, inst] of instances) {
        try {
          if (existsSync(inst.outputPath)) cpSync(inst.outputPath, join(outDir, "logs", `${t}-mesh-up.log`));
          const logs = join(inst.runtimeDir, "logs");
          if (existsSync(logs)) cpSync(logs, join(outDir, "logs", t), { recursive: true });
        } catch {
          // best effort: the report itself matters more
        }
      }
    }
    rmSync(workDir, { recursive: true, force: true });
  }

  const host = machine(loadStart);
  notes.push(...qualityNotes(runs, transports, o.ratesRps, host));
  if (abort.signal.aborted) notes.push(`interrupted after ${runs.length} of ${plan.length} runs: this report is partial`);

  const report: AbReport = {
    tool: "rpal-mesh ab",
    version: 1,
    started_at: startedAt,
    finished_at: new Date().toISOString(),
    config: relative(process.cwd(), resolve(o.configPath)) || o.configPath,
    target: { pod: entry.pod, kind: o.httpGet ? "http" : "grpc", method: entry.method, description: entry.describe },
    options: {
      transports,
      rates_rps: o.ratesRps,
      duration_seconds: o.durationMs / 1000,
      warmup_seconds: o.warmupMs / 1000,
      payload_bytes: o.payloadBytes,
      reps: o.reps,
      baseline: o.baseline,
      connections: o.connections,
      strace: o.strace,
      quick: o.quick,
    },
    machine: host,
    runs,
    summary: { baseline: o.baseline, groups: summarize(runs, o.baseline), idle, failed_runs: runs.filter((r) => !r.ok).length, notes },
  };
  let paths;
  try {
    paths = writeReport(outDir, report);
  } catch (e) {
    process.stderr.write(`mesh ab: ${(e as Error).message}\n`);
    return 2;
  }
  process.stdout.write(`${summaryLines(report).join("\n")}\n`);
  process.stdout.write(`mesh ab: wrote ${paths.json}, ${paths.md} and ${paths.html}\n`);
  if (abort.signal.aborted) return 130;
  const failed = report.summary.failed_runs + (plan.length - runs.length);
  if (failed > 0) {
    process.stderr.write(`mesh ab: ${failed} run(s) failed — see the report (and ${join(outDir, "logs")})\n`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  process.exit(await abMain(process.argv.slice(2)));
}
