// Counts every syscall two processes make during a window, with `perf stat -e raw_syscalls:sys_enter`
// started disabled and switched on/off through its control FIFOs (so attaching perf is not inside the
// window). Without perf (or without permission) the caller falls back to /proc/<pid>/io read+write
// counts, which miss every other syscall (epoll_wait, futex, …) and are labelled as a lower bound.
import { closeSync, constants, existsSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

export interface SyscallCount {
  total: number;
  /** The commonest data-path syscalls by name (only those from BREAKDOWN that occurred). */
  byName: Record<string, number>;
}

export interface SyscallCounter {
  enable(): void;
  /** Stops counting and returns the syscalls made while enabled. */
  finish(): Promise<SyscallCount>;
  abort(): void;
}

/** Syscalls an event loop or a transport typically makes per message; counted one by one to say which dominate. */
const BREAKDOWN = [
  "read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "epoll_wait", "epoll_pwait",
  "epoll_pwait2", "epoll_ctl", "futex", "sched_yield", "getcpu", "clock_gettime", "ioctl", "madvise", "mmap", "munmap",
  "timerfd_settime",
];

function availableBreakdown(): string[] {
  const dir = "/sys/kernel/tracing/events/syscalls";
  return BREAKDOWN.filter((n) => existsSync(`${dir}/sys_enter_${n}`));
}

function command(fd: number, ackFd: number, cmd: string): void {
  writeSync(fd, `${cmd}\n`);
  const buf = Buffer.alloc(16);
  const n = readSync(ackFd, buf); // blocks until perf acknowledges: the window edge is exact
  if (!buf.subarray(0, n).toString().startsWith("ack")) throw new Error(`perf did not acknowledge '${cmd}'`);
}

/** Returns undefined (and why) if perf cannot count syscalls here. */
export function startPerfCounter(pids: number[]): SyscallCounter | string {
  const perf = Bun.which("perf");
  if (!perf) return "perf not installed";
  const dir = mkdtempSync(join(tmpdir(), "rpal-mesh-bench-perf-"));
  const ctl = join(dir, "ctl");
  const ack = join(dir, "ack");
  const mk = Bun.spawnSync(["mkfifo", "-m", "600", ctl, ack]);
  if (mk.exitCode !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return `mkfifo failed: ${mk.stderr.toString()}`;
  }
  const proc: Subprocess<"ignore", "ignore", "pipe"> = Bun.spawn(
    [perf, "stat", "-x", ",", "-e", ["raw_syscalls:sys_enter", ...availableBreakdown().map((n) => `syscalls:sys_enter_${n}`)].join(","), "-p", pids.join(","), "-D", "-1", "--control", `fifo:${ctl},${ack}`],
    { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
  );
  // A blocking open of a FIFO waits for the other end, forever if perf failed to start (no
  // permission, unknown event): poll a non-blocking open while perf is alive instead.
  let ctlFd = -1;
  const until = performance.now() + 5_000;
  while (ctlFd < 0) {
    try {
      ctlFd = openSync(ctl, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch {
      if (proc.exitCode !== null || performance.now() > until) {
        proc.kill("SIGKILL");
        rmSync(dir, { recursive: true, force: true });
        return `perf stat could not attach to pids ${pids.join(",")} (exit ${proc.exitCode ?? "timeout"})`;
      }
      Bun.sleepSync(10);
    }
  }
  const ackFd = openSync(ack, "r"); // perf is up and opens its end right after the control FIFO
  const cleanup = () => {
    closeSync(ctlFd);
    closeSync(ackFd);
    rmSync(dir, { recursive: true, force: true });
  };
  return {
    enable: () => command(ctlFd, ackFd, "enable"),
    async finish() {
      command(ctlFd, ackFd, "disable");
      proc.kill("SIGINT");
      const err = await new Response(proc.stderr).text();
      await proc.exited;
      cleanup();
      let total: number | undefined;
      const byName: Record<string, number> = {};
      for (const line of err.split("\n")) {
        const [value = "", , event = ""] = line.split(",");
        const n = value.startsWith("<not") ? 0 : Number(value);
        if (!Number.isFinite(n)) continue;
        if (event === "raw_syscalls:sys_enter") total = n;
        else if (event.startsWith("syscalls:sys_enter_") && n > 0) byName[event.slice("syscalls:sys_enter_".length)] = n;
      }
      if (total === undefined) throw new Error(`perf printed no syscall count:\n${err.slice(-500)}`);
      return { total, byName };
    },
    abort() {
      proc.kill("SIGKILL");
      cleanup();
    },
  };
}

/**
 * Fallback when perf is missing: `strace -c -f` attached to both processes. ptrace stops every
 * syscall, so the processes run slower while counted (which can change how much each event-loop turn
 * batches); the per-call count is still what they did, and the row says which method produced it.
 * Counting starts once strace reports every process attached, a little before the window.
 */
export async function startStraceCounter(pids: number[]): Promise<SyscallCounter | string> {
  const strace = Bun.which("strace");
  if (!strace) return "neither perf nor strace is installed";
  const proc = Bun.spawn([strace, "-c", "-f", ...pids.flatMap((p) => ["-p", String(p)])], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const attached = () => pids.every((p) => new RegExp(`Process ${p} attached`).test(text));
  const deadline = Date.now() + 5_000;
  while (!attached()) {
    const next = await Promise.race([reader.read(), Bun.sleep(Math.max(0, deadline - Date.now())).then(() => undefined)]);
    if (!next || next.done) {
      proc.kill("SIGKILL");
      return `strace could not attach to pids ${pids.join(",")}: ${text.slice(-300)}`;
    }
    text += decoder.decode(next.value, { stream: true });
  }
  return {
    enable: () => undefined,
    async finish() {
      proc.kill("SIGINT");
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true });
      }
      await proc.exited;
      // Summary rows: "% time  seconds  usecs/call  calls  [errors]  syscall"; the last is "… total".
      let total: number | undefined;
      const byName: Record<string, number> = {};
      for (const line of text.split("\n")) {
        const f = line.trim().split(/\s+/);
        if (f.length < 5 || !/^\d/.test(f[0] ?? "")) continue;
        const calls = Number(f[3]);
        const name = f[f.length - 1] ?? "";
        if (!Number.isFinite(calls)) continue;
        if (name === "total") total = calls;
        else if (BREAKDOWN.includes(name) || name.startsWith("epoll")) byName[name] = calls;
      }
      if (total === undefined) throw new Error(`strace printed no summary:\n${text.slice(-500)}`);
      return { total, byName };
    },
    abort() {
      proc.kill("SIGKILL");
    },
  };
}
