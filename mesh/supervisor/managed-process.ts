// One supervised process (an app or a sidecar): spawns it, copies its output to a log file, keeps
// the last lines for error messages, and restarts it with exponential backoff when it exits on its own.
import { closeSync, openSync, writeSync } from "node:fs";
import type { Subprocess } from "bun";
import type { ProcState, Role } from "./state.ts";

export interface ProcessSpec {
  pod: string;
  role: Role;
  cmd: string[];
  cwd: string;
  env: Record<string, string>;
  logPath: string;
  /** Called for every stdout line; the sidecar's "ready" line is recognised here. */
  onStdoutLine?: (line: string) => void;
  /** Awaited before each restart: an app waits here until its sidecar is ready again. */
  beforeRestart?: () => Promise<void>;
  /** Called for every line of stdout and stderr (`mesh up --logs`). */
  mirror?: (line: string) => void;
}

export type ProcEvent =
  | { kind: "started"; pid: number; restart: boolean }
  | { kind: "exited"; pid: number; code: number | null; signal: string | null; ranMs: number; restartInMs: number | null; tail: string[] };

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
  /** A process that ran at least this long before exiting is considered healthy again. */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 250, maxMs: 10_000, resetAfterMs: 10_000 };

/** The delay before the `streak`-th consecutive restart: base, 2·base, 4·base… capped at max. */
export function backoffDelay(streak: number, p: BackoffPolicy = DEFAULT_BACKOFF): number {
  return Math.min(p.maxMs, p.baseMs * 2 ** Math.max(0, Math.min(streak - 1, 30)));
}

const TAIL_LINES = 12;

let setpriv: string | null | undefined;

/**
 * The command line that makes `cmd` get SIGTERM when the supervisor dies, even by SIGKILL: util-linux
 * `setpriv --pdeathsig` sets PR_SET_PDEATHSIG and execs it (same pid). Without setpriv, or with
 * MESH_PDEATHSIG=0, the command runs as is and the next `mesh up` reaps what a dead supervisor left.
 */
export function withParentDeathSignal(cmd: string[], env: Record<string, string | undefined> = process.env): string[] {
  if (env.MESH_PDEATHSIG === "0") return cmd;
  setpriv ??= Bun.which("setpriv");
  return setpriv ? [setpriv, "--pdeathsig", "SIGTERM", "--", ...cmd] : cmd;
}

export class ManagedProcess {
  // "starting" until the first spawn too, so the table never shows a process that was not launched yet as stopped.
  state: ProcState = "starting";
  restarts = 0;
  private proc: Subprocess<"ignore", "pipe", "pipe"> | undefined;
  private streak = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopping = false;
  private tail: string[] = [];
  private logFd: number;
  private exitWaiters: (() => void)[] = [];

  constructor(
    readonly spec: ProcessSpec,
    private onEvent: (p: ManagedProcess, e: ProcEvent) => void,
    private backoff: BackoffPolicy = DEFAULT_BACKOFF,
  ) {
    this.logFd = openSync(spec.logPath, "a", 0o600);
  }

  get pid(): number | null {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null ? this.proc.pid : null;
  }

  get name(): string {
    return `${this.spec.pod}/${this.spec.role}`;
  }

  /** The last lines the process printed (stdout and stderr), for error messages. */
  lastLines(): string[] {
    return [...this.tail];
  }

  /** Spawns the process. Throws if it cannot be spawned at all (e.g. the command does not exist). */
  start(): void {
    if (this.stopping) return;
    const startedAt = Date.now();
    const proc = Bun.spawn(withParentDeathSignal(this.spec.cmd), {
      cwd: this.spec.cwd,
      env: this.spec.env,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      // Its own process group, so a Ctrl-C on the terminal reaches only the supervisor, which then
      // stops apps before sidecars instead of everything dying at once mid-request.
      detached: true,
    });
    this.proc = proc;
    this.state = this.spec.role === "sidecar" ? "starting" : "running";
    const done = Promise.all([this.pump(proc.stdout, this.spec.onStdoutLine), this.pump(proc.stderr)]);
    this.onEvent(this, { kind: "started", pid: proc.pid, restart: this.restarts > 0 });
    void proc.exited.then(async () => {
      // Let the output pumps drain first so the tail shows the process's last words.
      await Promise.race([done, Bun.sleep(200)]);
      this.onExit(proc, Date.now() - startedAt);
    });
  }

  markRunning(): void {
    if (this.state === "starting") this.state = "running";
  }

  private onExit(proc: Subprocess, ranMs: number): void {
    if (this.proc !== proc) return;
    this.proc = undefined;
    const waiters = this.exitWaiters;
    this.exitWaiters = [];
    for (const w of waiters) w();
    let restartInMs: number | null = null;
    if (this.stopping) this.state = "stopped";
    else restartInMs = this.scheduleRestart(ranMs);
    this.onEvent(this, {
      kind: "exited",
      pid: proc.pid,
      code: proc.exitCode,
      signal: proc.signalCode === null ? null : String(proc.signalCode),
      ranMs,
      restartInMs,
      tail: this.lastLines(),
    });
  }

  private scheduleRestart(ranMs: number): number {
    this.streak = ranMs >= this.backoff.resetAfterMs ? 1 : this.streak + 1;
    const delay = backoffDelay(this.streak, this.backoff);
    this.state = "backoff";
    this.timer = setTimeout(async () => {
      this.timer = undefined;
      await this.spec.beforeRestart?.();
      if (this.stopping) {
        this.state = "stopped";
        return;
      }
      this.restarts++;
      try {
        this.start();
      } catch (e) {
        // The binary vanished or the cwd was removed: say so and keep trying on the same backoff.
        const msg = `mesh: cannot restart ${this.name}: ${(e as Error).message}`;
        this.appendLog(`${msg}\n`);
        this.remember(msg);
        const next = this.scheduleRestart(0);
        this.onEvent(this, { kind: "exited", pid: 0, code: null, signal: null, ranMs: 0, restartInMs: next, tail: [msg] });
      }
    }, delay);
    return delay;
  }

  private async pump(stream: ReadableStream<Uint8Array>, onLine?: (line: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    let partial = "";
    try {
      for await (const chunk of stream) {
        this.appendLog(chunk);
        partial += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = partial.indexOf("\n")) >= 0) {
          const line = partial.slice(0, nl);
          partial = partial.slice(nl + 1);
          this.remember(line);
          this.spec.mirror?.(line);
          onLine?.(line);
        }
        // A process printing megabytes without a newline must not grow our memory without bound.
        if (partial.length > 64 * 1024) partial = partial.slice(-1024);
      }
    } catch {
      // The pipe broke because the process died; its exit is handled elsewhere.
    }
    if (partial) {
      this.remember(partial);
      onLine?.(partial);
    }
  }

  private remember(line: string): void {
    this.tail.push(line.length > 500 ? `${line.slice(0, 500)}…` : line);
    if (this.tail.length > TAIL_LINES) this.tail.shift();
  }

  private appendLog(data: Uint8Array | string): void {
    try {
      if (typeof data === "string") writeSync(this.logFd, data);
      else writeSync(this.logFd, data);
    } catch {
      // A full disk must not take the supervisor down; the tail still has the last lines.
    }
  }

  /** Sends `signal` to the running process, if any. */
  signal(sig: NodeJS.Signals): void {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) p.kill(sig);
  }

  /** Stops restarting; the process (if running) is left to `signal`/`waitExit`. */
  disableRestarts(): void {
    this.stopping = true;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.state = "stopped";
    }
    if (this.proc) this.state = "stopping";
    else if (this.state === "starting") this.state = "stopped";
  }

  /** Resolves when the current process has exited (at once if none runs), or after `timeoutMs`. */
  waitExit(timeoutMs: number): Promise<boolean> {
    if (!this.proc) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      this.exitWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  close(): void {
    try {
      closeSync(this.logFd);
    } catch {
      // already closed
    }
  }
}
