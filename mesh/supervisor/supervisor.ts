// `mesh up`: starts every pod (sidecar first, its app once the sidecar printed its ready line),
// restarts what crashes, keeps the status table and the state file current, and on SIGINT/SIGTERM
// drains apps then sidecars and removes every socket it made.
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import type { MeshConfig, PodConfig } from "../config/index.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { fetchSidecarStatus } from "./admin-client.ts";
import { LiveDisplay, makeDisplay, type Display } from "./display.ts";
import { StartupError, UserError } from "./errors.ts";
import { ManagedProcess, type BackoffPolicy, type ProcEvent } from "./managed-process.ts";
import { ensurePrivateDir, MAX_SOCKET_PATH, runDir, runtimeRoot } from "./runtime-dir.ts";
import { readRuns, writeState, type PodState, type RunState } from "./state.ts";
import { renderStatusTable, sidecarPorts, type ProcessRow } from "./table.ts";
import { sidecarProcessEnv } from "../sidecar/process-env.ts";

/** The sidecar program; MESH_SIDECAR_ENTRY swaps in another one (a custom build, or a test double). */
export const SIDECAR_ENTRY = process.env.MESH_SIDECAR_ENTRY || join(import.meta.dir, "../sidecar/main.ts");
/**
 * Sidecars run from a bundle of SIDECAR_ENTRY built into the run directory at start (see
 * mesh/sidecar/bundle.ts: ~3 MB less RSS each), unless MESH_SIDECAR_ENTRY names a program or
 * MESH_SIDECAR_BUNDLE=off. A failed build falls back to running the source, with a warning.
 */
const BUNDLE_SIDECAR = !process.env.MESH_SIDECAR_ENTRY && process.env.MESH_SIDECAR_BUNDLE !== "off";

export interface UpOptions {
  config: MeshConfig;
  configPath: string;
  /** --transport, or MESH_TRANSPORT; overrides every pod's sidecar.transport. */
  transport?: TransportChoice;
  readyTimeoutMs: number;
  /** How long apps (then sidecars, plus their drain_seconds) get after SIGTERM before SIGKILL. */
  graceMs: number;
  /** Mirror every child's output to stderr, prefixed with pod/process. */
  mirrorLogs: boolean;
  /** The bun executable to run sidecars (and apps whose command is `bun`) with; a marked copy for rpal. */
  bunPath: string;
  backoff?: BackoffPolicy;
  display?: Display;
}

interface ReadyLine {
  inbound: string | null;
  admin: string | null;
}

/** The sidecar's one JSON "ready" line; anything else on its stdout is ignored. */
export function parseReadyLine(line: string): ReadyLine | null {
  if (!line.startsWith("{") || line.length > 4096) return null;
  try {
    const v = JSON.parse(line) as Record<string, unknown>;
    if (v.event !== "ready") return null;
    const addr = (x: unknown) => (typeof x === "string" && x.length > 0 && x.length <= 300 ? x : null);
    return { inbound: addr(v.inbound), admin: addr(v.admin) };
  } catch {
    return null;
  }
}

class PodRunner {
  readonly sidecar: ManagedProcess;
  readonly app: ManagedProcess;
  inbound: string | null = null;
  admin: string | null = null;
  transport: string | null = null;
  private readyWaiter: ((r: ReadyLine) => void) | undefined;

  constructor(
    readonly pod: PodConfig,
    readonly socketPath: string,
    readonly transport_requested: TransportChoice,
    sidecarCmd: string[],
    appCmd: string[],
    logDir: string,
    onEvent: (p: ManagedProcess, e: ProcEvent) => void,
    backoff: BackoffPolicy | undefined,
    mirror: ((who: string, line: string) => void) | undefined,
  ) {
    const baseEnv = { ...(process.env as Record<string, string>) };
    // Our own TTY-ness must not leak: children write to pipes and log files.
    delete baseEnv.FORCE_COLOR;
    this.sidecar = new ManagedProcess(
      {
        pod: pod.name,
        role: "sidecar",
        cmd: sidecarCmd,
        cwd: process.cwd(),
        env: { ...baseEnv, ...sidecarProcessEnv(baseEnv), MESH_POD: pod.name, MESH_LOG_FORMAT: baseEnv.MESH_LOG_FORMAT ?? "json" },
        logPath: join(logDir, `${pod.name}-sidecar.log`),
        mirror: mirror && ((line) => mirror(`${pod.name}/sidecar`, line)),
        onStdoutLine: (line) => {
          const ready = parseReadyLine(line);
          if (!ready) return;
          this.inbound = ready.inbound;
          this.admin = ready.admin;
          this.sidecar.markRunning();
          this.readyWaiter?.(ready);
          this.releaseWaiters();
          this.onReady?.(this);
        },
      },
      onEvent,
      backoff,
    );
    this.app = new ManagedProcess(
      {
        pod: pod.name,
        role: "app",
        cmd: appCmd,
        cwd: pod.app.cwd,
        env: {
          ...baseEnv,
          ...pod.app.env,
          MESH_SOCKET: socketPath,
          MESH_TRANSPORT: transport_requested,
          MESH_POD: pod.name,
        },
        logPath: join(logDir, `${pod.name}-app.log`),
        // An app restarted while its sidecar is down would only fail to connect and crash again.
        beforeRestart: () => this.sidecarRunning(),
        mirror: mirror && ((line) => mirror(`${pod.name}/app`, line)),
      },
      onEvent,
      backoff,
    );
  }

  /** Starts the sidecar and resolves once it printed ready; rejects naming the pod if it cannot. */
  async startSidecar(timeoutMs: number): Promise<void> {
    const ready = new Promise<ReadyLine>((resolve) => (this.readyWaiter = resolve));
    const exited = new Promise<never>((_, reject) => {
      this.sidecarExitedEarly = (e) => reject(e);
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`did not print its ready line within ${timeoutMs / 1000}s`)), timeoutMs);
    });
    try {
      this.sidecar.start();
      await Promise.race([ready, exited, deadline]);
    } catch (e) {
      const tail = this.sidecar.lastLines().slice(-6).map((l) => `    ${l}`).join("\n");
      throw new StartupError(
        `pod ${this.pod.name}: its sidecar failed to start: ${(e as Error).message}${tail ? `\n  last output:\n${tail}` : ""}\n  full log: ${this.sidecar.spec.logPath}`,
      );
    } finally {
      clearTimeout(timer);
      this.sidecarExitedEarly = undefined;
    }
  }

  private runningWaiters: (() => void)[] = [];

  /** Resolves once the sidecar is running (printed ready), at once if it is. */
  sidecarRunning(): Promise<void> {
    if (this.sidecar.state === "running") return Promise.resolve();
    return new Promise((resolve) => this.runningWaiters.push(resolve));
  }

  /** Lets whatever waits on the sidecar go, e.g. when everything is stopping. */
  releaseWaiters(): void {
    const w = this.runningWaiters;
    this.runningWaiters = [];
    for (const f of w) f();
  }

  sidecarExitedEarly: ((e: Error) => void) | undefined;
  onReady: ((p: PodRunner) => void) | undefined;

  startApp(): void {
    this.app.start();
  }

  rows(): ProcessRow[] {
    return [this.sidecar, this.app].map((p) => ({
      pod: this.pod.name,
      role: p.spec.role,
      pid: p.pid,
      state: p.state,
      transport: this.transport,
      ports: p.spec.role === "sidecar" ? sidecarPorts(this.inbound, this.admin) : "",
      restarts: p.restarts,
    }));
  }

  toState(): PodState {
    return {
      name: this.pod.name,
      inbound: this.inbound,
      admin: this.admin,
      app_socket: this.socketPath,
      transport_requested: this.transport_requested,
      transport: this.transport,
      processes: [this.sidecar, this.app].map((p) => ({
        role: p.spec.role,
        pid: p.pid,
        restarts: p.restarts,
        state: p.state,
        log: p.spec.logPath,
      })),
    };
  }
}

const KEEP_LOG_RUNS = 10;

/** Keeps the logs of the newest `keep` runs; older ones go, so /tmp does not fill up over weeks. */
function pruneOldLogs(logsDir: string, keep: number): void {
  try {
    const dirs = readdirSync(logsDir)
      .map((name) => ({ name, mtime: statSync(join(logsDir, name)).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime);
    for (const d of dirs.slice(keep)) rmSync(join(logsDir, d.name), { recursive: true, force: true });
  } catch {
    // Pruning is housekeeping: never a reason to fail `mesh up`.
  }
}

/** A pino JSON line shown as its message (and error), the way a person would want to read it. */
export function readableLogLine(line: string): string {
  if (!line.startsWith("{")) return line;
  try {
    const v = JSON.parse(line) as { msg?: unknown; err?: { message?: unknown } | unknown };
    if (typeof v.msg !== "string") return line;
    const err = v.err && typeof v.err === "object" && typeof (v.err as { message?: unknown }).message === "string" ? `: ${(v.err as { message: string }).message}` : "";
    return `${v.msg}${err}`;
  } catch {
    return line;
  }
}

/**
 * The lines of a dead process's output that say why it died: an uncaught error's "error: …" line if
 * there is one (Bun prints the stack and its version after it), else the last few lines.
 */
export function crashSummary(tail: string[]): string[] {
  const lines = tail.map(readableLogLine).filter((l) => l.trim() && !/^Bun v\d/.test(l.trim()));
  const errorLine = [...lines].reverse().find((l) => /^\s*(error|\w*Error)\b[^:]*:/.test(l));
  return errorLine ? [errorLine.trim()] : lines.slice(-3);
}

function describeExit(e: Extract<ProcEvent, { kind: "exited" }>): string {
  if (e.pid === 0) return "could not be started";
  const how = e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
  return `${how} after ${(e.ranMs / 1000).toFixed(1)}s`;
}

export class Supervisor {
  private readonly runId = `${Date.now().toString(36)}-${process.pid.toString(36)}`;
  private readonly root = runtimeRoot();
  private readonly dir: string;
  private readonly logDir: string;
  private readonly pods: PodRunner[] = [];
  private readonly display: Display;
  private readonly startedAt = new Date().toISOString();
  private stopping = false;
  private allStarted = false;
  private forced = false;
  private stopSignalAt = 0;
  private stopRequested: ((reason: string) => void) | undefined;
  private pollTimer: ReturnType<typeof setInterval> | undefined;
  private signalHandlers: [NodeJS.Signals, () => void][] = [];
  /** Each pod's sidecar command line; its [1], the program, becomes the bundle once built. */
  private readonly sidecarCmds: string[][] = [];

  constructor(private opts: UpOptions) {
    this.display = opts.display ?? makeDisplay();
    ensurePrivateDir(this.root);
    ensurePrivateDir(join(this.root, "runs"));
    this.dir = runDir(this.root, this.runId);
    // Logs outlive the run (they explain a crash after the fact); sockets and state do not.
    this.logDir = ensurePrivateDir(join(this.root, "logs", this.runId));
    pruneOldLogs(join(this.root, "logs"), KEEP_LOG_RUNS);
    for (const pod of opts.config.pods) {
      const socketPath = join(this.dir, pod.name, "app.sock");
      if (socketPath.length > MAX_SOCKET_PATH) {
        throw new UserError(
          `the app socket path ${socketPath} is ${socketPath.length} bytes, over the ${MAX_SOCKET_PATH}-byte limit of Unix sockets — shorten the pod name or set MESH_RUNTIME_DIR to a shorter directory`,
        );
      }
      const transport = opts.transport ?? pod.sidecar.transport;
      const sidecarCmd = [
        opts.bunPath,
        SIDECAR_ENTRY,
        "--config",
        opts.configPath,
        "--pod",
        pod.name,
        "--app-socket",
        socketPath,
        "--transport",
        transport,
      ];
      this.sidecarCmds.push(sidecarCmd);
      // An app started as `bun …` runs on the same bun as the sidecar (the marked copy under rpal).
      const command = pod.app.command === "bun" ? opts.bunPath : pod.app.command;
      this.pods.push(
        new PodRunner(pod, socketPath, transport, sidecarCmd, [command, ...pod.app.args], this.logDir,
          (p, e) => this.onProcEvent(p, e),
          opts.backoff,
          opts.mirrorLogs ? (who, line) => this.display.event(`${who} | ${readableLogLine(line)}`) : undefined,
        ),
      );
    }
  }

  /** Builds the sidecar bundle into the run directory and has every pod run it (the source if it fails). */
  private async bundleSidecar(): Promise<void> {
    try {
      const { buildSidecarBundle } = await import("../sidecar/bundle.ts");
      // ".sidecar-bundle": not a possible pod name ([a-z0-9-]), so never a pod's directory.
      const bundle = await buildSidecarBundle(join(this.dir, ".sidecar-bundle"), SIDECAR_ENTRY);
      for (const cmd of this.sidecarCmds) cmd[1] = bundle;
    } catch (e) {
      this.display.event(`mesh: could not bundle the sidecar (${(e as Error).message}); running it from source, which costs each sidecar ~3 MB more memory (MESH_SIDECAR_BUNDLE=off skips the attempt)`);
    }
  }

  /** Runs until SIGINT/SIGTERM (or a fatal start-up failure); resolves with the exit code. */
  async run(): Promise<number> {
    for (const p of this.pods) {
      p.onReady = (r) => {
        if (r.sidecar.restarts > 0 && !this.stopping) this.display.event(`mesh: ${r.pod.name}/sidecar ready again; its app reconnects by itself`);
        this.refresh();
      };
    }
    const stopped = new Promise<string>((resolve) => (this.stopRequested = resolve));
    this.installSignals();
    readRuns(join(this.root, "runs"), { reapStale: true, onReap: (msg) => this.display.event(`mesh: ${msg}`) });
    ensurePrivateDir(this.dir);
    for (const p of this.pods) ensurePrivateDir(join(this.dir, p.pod.name));
    if (BUNDLE_SIDECAR) await this.bundleSidecar();
    this.saveState();
    this.display.event(`mesh: starting ${this.pods.length} pod(s) from ${this.shortPath(this.opts.configPath)} (logs in ${this.logDir})`);
    let startupError: Error | undefined;
    try {
      await Promise.race([
        Promise.all(
          this.pods.map(async (p) => {
            await p.startSidecar(this.opts.readyTimeoutMs);
            if (this.stopping) return;
            this.display.event(`mesh: ${p.pod.name}/sidecar ready (${sidecarPorts(p.inbound, p.admin) || "no ports"}); starting its app`);
            p.startApp();
            this.saveState();
          }),
        ),
        stopped,
      ]);
    } catch (e) {
      startupError = e as Error;
    }
    if (!this.stopping && !startupError) {
      await Promise.race([this.waitForSessions(this.opts.readyTimeoutMs), stopped]);
    }
    if (!this.stopping && !startupError) {
      this.allStarted = true;
      this.display.event(`mesh: all ${this.pods.length} pod(s) running — Ctrl-C to stop`);
      this.refresh();
      this.pollTimer = setInterval(() => void this.pollTransports(), 1000);
      void this.pollTransports();
      await stopped;
    }
    if (startupError) this.display.event(`mesh: ${startupError.message}`);
    await this.drain(startupError ? "start-up failed" : "signal");
    return startupError ? (startupError as StartupError).exitCode ?? 1 : 0;
  }

  private shortPath(p: string): string {
    const rel = relative(process.cwd(), p);
    return rel && !rel.startsWith("..") ? rel : p;
  }

  private installSignals(): void {
    for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
      const handler = () => {
        if (this.stopping) {
          // A second Ctrl-C means "now": skip the grace period. One signal often arrives twice (from
          // `bun run` forwarding it and from the terminal's process group), hence the short window.
          if (!this.forced && Date.now() - this.stopSignalAt > 500) {
            this.forced = true;
            this.display.event("mesh: second signal — killing everything now");
            for (const p of this.pods) for (const proc of [p.app, p.sidecar]) proc.signal("SIGKILL");
          }
          return;
        }
        this.display.event(`mesh: ${sig} received — stopping apps, then sidecars`);
        this.stopping = true;
        this.stopSignalAt = Date.now();
        this.stopRequested?.(sig);
      };
      process.on(sig, handler);
      this.signalHandlers.push([sig, handler]);
    }
  }

  private onProcEvent(p: ManagedProcess, e: ProcEvent): void {
    const pod = this.pods.find((r) => r.pod.name === p.spec.pod);
    if (e.kind === "started") {
      if (e.restart) this.display.event(`mesh: ${p.name} restarted (pid ${e.pid}, restart #${p.restarts})`);
    } else if (!this.stopping) {
      if (p.spec.role === "sidecar" && pod?.sidecarExitedEarly) {
        pod.sidecarExitedEarly(new Error(describeExit(e)));
        p.disableRestarts();
      } else {
        if (p.spec.role === "sidecar" && pod) pod.transport = null;
        // Why it died is in its last words, unless someone killed it from outside.
        const killed = e.signal === "SIGKILL" || e.signal === "SIGTERM";
        const tail = killed ? "" : crashSummary(e.tail).map((l) => `\n    ${l}`).join("");
        const again = e.restartInMs === null ? "" : ` — restarting in ${(e.restartInMs / 1000).toFixed(2)}s`;
        this.display.event(`mesh: ${p.name} ${describeExit(e)}${again}${tail}`);
      }
    }
    this.refresh();
  }

  private refresh(): void {
    this.saveState();
    const live = this.display instanceof LiveDisplay;
    const settled = this.pods.every((p) => p.sidecar.state === "running" && p.app.state === "running");
    // Plain output (a pipe, a log) gets the table when things have settled, not at every step.
    if (!this.stopping && (live || (this.allStarted && settled))) {
      this.display.table(renderStatusTable(this.pods.flatMap((p) => p.rows())));
    }
  }

  private saveState(): void {
    const state: RunState = {
      version: 1,
      run_id: this.runId,
      supervisor_pid: process.pid,
      config: this.opts.configPath,
      started_at: this.startedAt,
      pods: this.pods.map((p) => p.toState()),
    };
    try {
      if (existsSync(this.dir)) writeState(this.dir, state);
    } catch (e) {
      this.display.event(`mesh: cannot write the state file in ${this.dir}: ${(e as Error).message}`);
    }
  }

  /**
   * "Running" should mean "serving": wait (bounded) until every app has a session with its sidecar.
   * An app that never connects (one that does not use the SDK) only gets a note, not an error.
   */
  private async waitForSessions(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.stopping && Date.now() < deadline) {
      await this.pollTransports();
      if (this.pods.every((p) => p.transport !== null || !p.admin)) return;
      await Bun.sleep(50);
    }
    for (const p of this.pods) {
      if (p.transport === null && p.admin && !this.stopping) {
        this.display.event(`mesh: ${p.pod.name}'s app has not connected to its sidecar within ${timeoutMs / 1000}s (see ${p.app.spec.logPath})`);
      }
    }
  }

  private async pollTransports(): Promise<void> {
    let changed = false;
    await Promise.all(
      this.pods.map(async (p) => {
        if (!p.admin || p.sidecar.pid === null) return;
        const status = await fetchSidecarStatus(p.admin, 800);
        const t = status?.transport ?? null;
        if (t !== p.transport && !this.stopping) {
          p.transport = t;
          changed = true;
          if (t) this.display.event(`mesh: ${p.pod.name} app ↔ sidecar transport: ${t}`);
        }
      }),
    );
    if (changed) this.refresh();
  }

  /** Apps first (they may still be calling out through their sidecars), then sidecars; SIGKILL after grace. */
  private async drain(reason: string): Promise<void> {
    this.stopping = true;
    clearInterval(this.pollTimer);
    const apps = this.pods.map((p) => p.app);
    const sidecars = this.pods.map((p) => p.sidecar);
    for (const p of [...apps, ...sidecars]) p.disableRestarts();
    for (const p of this.pods) p.releaseWaiters();
    await this.stopGroup(apps, this.opts.graceMs);
    const drainMs = Math.max(0, ...this.pods.map((p) => p.pod.sidecar.drain_seconds)) * 1000;
    await this.stopGroup(sidecars, drainMs + this.opts.graceMs);
    for (const p of [...apps, ...sidecars]) p.close();
    rmSync(this.dir, { recursive: true, force: true });
    for (const [sig, h] of this.signalHandlers) process.off(sig, h);
    this.display.event(`mesh: stopped (${reason}); no process or socket left behind`);
  }

  private async stopGroup(procs: ManagedProcess[], graceMs: number): Promise<void> {
    for (const p of procs) p.signal("SIGTERM");
    this.saveState();
    const exited = await Promise.all(procs.map((p) => p.waitExit(graceMs)));
    const stuck = procs.filter((_, i) => !exited[i]);
    for (const p of stuck) {
      this.display.event(`mesh: ${p.name} did not exit within ${(graceMs / 1000).toFixed(1)}s of SIGTERM — sending SIGKILL`);
      p.signal("SIGKILL");
    }
    await Promise.all(stuck.map((p) => p.waitExit(5000)));
  }
}
