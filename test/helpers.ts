// Shared helpers for multi-process tests: spawn real Bun processes, wait for conditions with a
// deadline (never sleep as synchronisation), and clean up whatever a test started even when it fails.
import { mkdtempSync, rmSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { withParentDeathSignal } from "../mesh/supervisor/managed-process.ts";

export const REPO_ROOT = join(import.meta.dir, "..");

/** Polls `cond` until it returns a truthy value or the deadline passes; returns that value. */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 10, what = "condition" }: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ""}`);
    }
    await Bun.sleep(intervalMs);
  }
}

/** A private 0700 scratch directory, removed by cleanup(). */
export function scratchDir(prefix = "rpal-mesh-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface Spawned {
  proc: Subprocess<"ignore" | "pipe", "pipe", "pipe">;
  /** Everything the process printed so far (stdout + stderr), for assertions and failure messages. */
  output(): string;
  /** Resolves with the first output line matching `re`, or rejects at the deadline. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
}

/** Tracks every process and path a test creates so `cleanup()` can remove them even after a failure. */
export class TestResources {
  private procs: Subprocess[] = [];
  private paths: string[] = [];

  spawnBun(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; stdin?: "ignore" | "pipe" } = {}): Spawned {
    return this.spawn([process.execPath, ...args], opts);
  }

  spawn(cmd: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; stdin?: "ignore" | "pipe" } = {}): Spawned {
    const env = { ...process.env, MESH_LOG_FORMAT: "json", ...opts.env };
    // With the parent-death signal, as `mesh up` starts its processes: a test runner or bench killed
    // with SIGKILL (cleanup() never runs) takes what it started with it instead of leaving sidecars,
    // apps and servers running.
    const proc = Bun.spawn(withParentDeathSignal(cmd, env), {
      cwd: opts.cwd ?? REPO_ROOT,
      env: env as Record<string, string>,
      stdin: opts.stdin ?? "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    this.procs.push(proc);
    let text = "";
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    };
    void pump(proc.stdout);
    void pump(proc.stderr);
    return {
      proc: proc as Spawned["proc"],
      output: () => text,
      waitForLine: async (re, timeoutMs = 15_000) => {
        const line = await waitFor(
          () => {
            const m = text.split("\n").find((l) => re.test(l));
            if (m) return m;
            if (proc.exitCode !== null || proc.signalCode !== null) {
              throw new Error(`process exited (${proc.exitCode ?? proc.signalCode}) before printing ${re}:\n${text}`);
            }
            return undefined;
          },
          { timeoutMs, what: `a line matching ${re}` },
        ).catch((e) => {
          throw new Error(`${(e as Error).message}\n--- output of ${cmd.join(" ")} ---\n${text}`);
        });
        return line;
      },
    };
  }

  track(path: string): string {
    this.paths.push(path);
    return path;
  }

  scratchDir(prefix?: string): string {
    return this.track(scratchDir(prefix));
  }

  async cleanup(): Promise<void> {
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    }
    await Promise.all(this.procs.map((p) => p.exited.catch(() => undefined)));
    this.procs = [];
    for (const path of this.paths) if (existsSync(path)) rmSync(path, { recursive: true, force: true });
    this.paths = [];
  }
}

/** Names of rpal-mesh segments in /dev/shm (tests assert none are left behind). */
export function leakedShmSegments(prefix = "rpal-mesh-"): string[] {
  try {
    return readdirSync("/dev/shm").filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
}

/** True while a process with this pid exists (signal 0 reaches it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
