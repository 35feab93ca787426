// Counts every syscall two processes make during a window, with `perf stat -e raw_syscalls:sys_enter`
// started disabled and switched on/off through its control FIFOs (so attaching perf is not inside the
// window). Without perf (or without permission) the caller falls back to /proc/<pid>/io read+write
// counts, which miss every other syscall (epoll_wait, futex, …) and are labelled as a lower bound.
import { existsSync, mkdtempSync, rmSync, openSync, closeSync, writeSync, readSync } from "node:fs";
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
  // Opening a FIFO blocks until the other end opens it; perf opens both at start-up.
  const ctlFd = openSync(ctl, "w");
  const ackFd = openSync(ack, "r");
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
