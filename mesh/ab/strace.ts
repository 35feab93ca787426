// Optional syscall counting (--strace): `strace -c -f -p PID` on each process for the measured window
// only. ptrace slows every syscall down a lot, so CPU figures of a traced run are not comparable with an
// untraced one — the report says so. When strace is missing or may not attach, counts are null.
import type { Subprocess } from "bun";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

export interface SyscallCounts {
  total: number;
  top: { name: string; calls: number }[];
}

export function straceAvailable(): string | null {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    if (dir && existsSync(join(dir, "strace"))) return join(dir, "strace");
  }
  return null;
}

/** Parses the table `strace -c` writes; null if it holds no total line. */
export function parseStraceSummary(text: string): SyscallCounts | null {
  const rows: { name: string; calls: number }[] = [];
  let total: number | null = null;
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5 || !/^\d/.test(cols[0]!)) continue;
    // % time, seconds, usecs/call, calls, [errors], syscall — errors is blank when there were none.
    const name = cols.at(-1)!;
    const calls = Number(cols[3]);
    if (!Number.isFinite(calls)) continue;
    if (name === "total") total = calls;
    else rows.push({ name, calls });
  }
  if (total === null) return null;
  rows.sort((a, b) => b.calls - a.calls);
  return { total, top: rows.slice(0, 5) };
}

export class StraceSession {
  private procs: { pid: number; proc: Subprocess; out: string }[] = [];

  constructor(
    private readonly strace: string,
    private readonly dir: string,
  ) {}

  start(pids: number[]): void {
    for (const pid of pids) {
      const out = join(this.dir, `strace-${pid}-${Date.now()}.txt`);
      const proc = Bun.spawn([this.strace, "-c", "-f", "-q", "-o", out, "-p", String(pid)], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
      this.procs.push({ pid, proc, out });
    }
  }

  /** Detaches (SIGINT makes strace write its summary) and returns pid → counts (null if unavailable). */
  async stop(): Promise<Map<number, SyscallCounts | null>> {
    const result = new Map<number, SyscallCounts | null>();
    for (const p of this.procs) if (p.proc.exitCode === null) p.proc.kill("SIGINT");
    await Promise.all(
      this.procs.map((p) => Promise.race([p.proc.exited, Bun.sleep(5000).then(() => p.proc.kill("SIGKILL"))])),
    );
    for (const p of this.procs) {
      let counts: SyscallCounts | null = null;
      try {
        counts = parseStraceSummary(readFileSync(p.out, "utf8"));
      } catch {
        // strace could not attach (no ptrace permission) or wrote nothing
      }
      rmSync(p.out, { force: true });
      result.set(p.pid, counts);
    }
    this.procs = [];
    return result;
  }
}
