// One running copy of the mesh for one transport: `bun mesh/cli/main.ts up <copy> --transport X` in its
// own process, with its own private runtime directory (MESH_RUNTIME_DIR) so the supervisor's state file
// — which names every pod's sidecar and app pid — is found without guessing. The harness never counts
// the supervisor's CPU: only the pods' apps and sidecars.
import type { Subprocess } from "bun";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { MeshConfig } from "../config/index.ts";
import { fetchSidecarStatus } from "../supervisor/admin-client.ts";
import type { RunState } from "../supervisor/state.ts";
import { instanceYaml, planInstance } from "./instance-config.ts";
import { ProcessTracker, windowFigures } from "../../runtime/procstat.ts";
import type { IdleFigure } from "./report-types.ts";

const REPO_ROOT = join(import.meta.dir, "..", "..");
const CLI = join(REPO_ROOT, "mesh", "cli", "main.ts");

export interface MeshProcess {
  pod: string;
  role: "app" | "sidecar";
  pid: number;
  restarts: number;
}

export interface PodAddresses {
  pod: string;
  inbound: string | null;
  admin: string | null;
}

export class InstanceError extends Error {
  override name = "InstanceError";
}

function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no output)";
  }
}

export class MeshInstance {
  private proc: Subprocess | undefined;
  private knownPids = new Set<number>();
  readonly yamlPath: string;
  readonly runtimeDir: string;
  readonly outputPath: string;
  pods: PodAddresses[] = [];

  private constructor(
    readonly transport: string,
    readonly dir: string,
    readonly config: MeshConfig,
  ) {
    this.yamlPath = join(dir, "mesh.yaml");
    this.runtimeDir = join(dir, "rt");
    this.outputPath = join(dir, "mesh-up.log");
  }

  /** Writes the per-transport copy of the config into `dir` (private, made by the caller). */
  static async prepare(transport: string, dir: string, config: MeshConfig, source: string): Promise<MeshInstance> {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const plan = await planInstance(config);
    const inst = new MeshInstance(transport, dir, plan.config);
    writeFileSync(inst.yamlPath, instanceYaml(plan.config, transport, source), { mode: 0o600 });
    return inst;
  }

  get supervisorPid(): number | undefined {
    return this.proc?.pid;
  }

  /** Reads the supervisor's state file; undefined until it exists (it is input: a bad one is ignored). */
  readState(): RunState | undefined {
    const runs = join(this.runtimeDir, "runs");
    if (!existsSync(runs)) return undefined;
    for (const id of readdirSync(runs)) {
      const file = join(runs, id, "state.json");
      try {
        const text = readFileSync(file, "utf8");
        if (text.length > 4 * 1024 * 1024) continue;
        return JSON.parse(text) as RunState;
      } catch {
        // not written yet, or being replaced: the next poll reads it
      }
    }
    return undefined;
  }

  processes(): MeshProcess[] {
    const state = this.readState();
    if (!state || !Array.isArray(state.pods)) return [];
    const out: MeshProcess[] = [];
    for (const pod of state.pods) {
      for (const p of pod.processes ?? []) {
        if (Number.isInteger(p.pid) && (p.pid as number) > 0 && (p.role === "app" || p.role === "sidecar")) {
          out.push({ pod: pod.name, role: p.role, pid: p.pid as number, restarts: p.restarts });
        }
      }
    }
    return out;
  }

  /** Starts `mesh up` and resolves once every app and sidecar runs and every sidecar reports `transport`. */
  async start(timeoutMs: number): Promise<void> {
    mkdirSync(this.runtimeDir, { recursive: true, mode: 0o700 });
    // One append-mode descriptor for both streams, so stdout and stderr interleave instead of overwriting.
    const out = openSync(this.outputPath, "a", 0o600);
    try {
      this.proc = Bun.spawn([process.execPath, CLI, "up", this.yamlPath, "--transport", this.transport], {
        cwd: REPO_ROOT,
        env: { ...process.env, MESH_RUNTIME_DIR: this.runtimeDir, MESH_LOG_FORMAT: "json", FORCE_COLOR: undefined } as unknown as Record<string, string>,
        stdin: "ignore",
        stdout: out,
        stderr: out,
      });
    } finally {
      closeSync(out);
    }
    const deadline = Date.now() + timeoutMs;
    let why = "the state file did not appear";
    for (;;) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new InstanceError(
          `mesh up --transport ${this.transport} exited (${this.proc.exitCode ?? this.proc.signalCode}) before its pods were ready:\n${tail(this.outputPath)}`,
        );
      }
      const ready = await this.readiness();
      if (ready === true) break;
      why = ready;
      if (Date.now() > deadline) {
        throw new InstanceError(`pods for transport ${this.transport} not ready after ${timeoutMs / 1000} s: ${why}\n${tail(this.outputPath)}`);
      }
      await Bun.sleep(100);
    }
    for (const p of this.processes()) this.knownPids.add(p.pid);
  }

  /** true, or what is still missing. */
  private async readiness(): Promise<true | string> {
    const state = this.readState();
    if (!state) return "the state file did not appear";
    const want = this.config.pods.length * 2;
    const procs = state.pods.flatMap((p) => p.processes.map((x) => ({ ...x, pod: p.name })));
    const notRunning = procs.filter((p) => p.state !== "running" || !p.pid);
    if (procs.length < want || notRunning.length) {
      return `not running yet: ${notRunning.map((p) => `${p.pod}/${p.role} (${p.state})`).join(", ") || "some processes"}`;
    }
    this.pods = state.pods.map((p) => ({ pod: p.name, inbound: p.inbound, admin: p.admin }));
    for (const pod of this.pods) {
      if (!pod.admin) return `${pod.pod}: no admin address yet`;
      const st = await fetchSidecarStatus(pod.admin, 1000);
      if (!st) return `${pod.pod}: admin ${pod.admin} /status did not answer`;
      if (st.transport !== this.transport) return `${pod.pod}: app session transport is ${st.transport ?? "none yet"}, waiting for ${this.transport}`;
    }
    return true;
  }

  /** Transport each sidecar reports in use, "mixed" or null if unknown. */
  async transportInUse(): Promise<string | null> {
    const seen = new Set<string | null>();
    for (const pod of this.pods) seen.add(pod.admin ? ((await fetchSidecarStatus(pod.admin, 1000))?.transport ?? null) : null);
    if (seen.size === 1) return [...seen][0] ?? null;
    return "mixed";
  }

  /** Why this instance can no longer be measured (a process exited or was restarted), or null. */
  health(): string | null {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) {
      return `mesh up --transport ${this.transport} exited:\n${tail(this.outputPath, 8)}`;
    }
    const procs = this.processes();
    for (const p of procs) {
      if (!this.knownPids.has(p.pid)) {
        return `${p.pod}/${p.role} was restarted (pid now ${p.pid}, ${p.restarts} restart(s)); see ${this.outputPath}`;
      }
    }
    return null;
  }

  /** CPU of the pods while nothing calls them: the fixed cost a transport adds (timers, spinning, polling). */
  async measureIdle(windowMs: number): Promise<IdleFigure | string> {
    const procs = this.processes();
    try {
      const trackers = procs.map((p) => new ProcessTracker(p.pid));
      const t0 = performance.now();
      const before = trackers.map((t) => t.poll());
      // This is the measurement window, not synchronisation; polled so exiting threads keep their time.
      for (let left = windowMs; left > 0; left -= 250) {
        await Bun.sleep(Math.min(250, left));
        for (const t of trackers) t.poll();
      }
      const after = trackers.map((t) => t.poll());
      const seconds = (performance.now() - t0) / 1000;
      const by = procs.map((p, i) => ({ pod: p.pod, role: p.role, vcpu: windowFigures(p.pid, before[i]!, after[i]!).cpuNs / 1e9 / seconds }));
      return { transport: this.transport, window_seconds: seconds, vcpu: by.reduce((s, x) => s + x.vcpu, 0), by_process: by };
    } catch (e) {
      return `idle CPU of ${this.transport} not measured: ${(e as Error).message}`;
    }
  }

  /** Accepts the current pids as the new normal (after a failed run, so later runs can still go on). */
  rebaseline(): void {
    this.knownPids = new Set(this.processes().map((p) => p.pid));
  }

  /** SIGTERM to mesh up (it drains the pods); SIGKILL to it and every pod pid it reported if that hangs. */
  async stop(graceMs = 15_000): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    const pids = [...this.knownPids, ...this.processes().map((p) => p.pid)];
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
    const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
    if (!exited) proc.kill("SIGKILL");
    await proc.exited;
    // mesh up normally reaps its pods; if it was killed, they are orphans we started: end them by pid.
    for (const pid of new Set(pids)) {
      try {
        // Only a process that carries this instance's runtime dir is ours (the pid may have been reused).
        if (!readFileSync(`/proc/${pid}/environ`, "utf8").includes(`MESH_RUNTIME_DIR=${this.runtimeDir}\0`)) continue;
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}
