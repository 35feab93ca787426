// Smoke test of `bun run bench`: the harness builds and runs the C references and prints a JSON array
// whose rows have the documented shape. Timings are never asserted here (they belong to the bench).
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";

const RUN = join(import.meta.dir, "run.ts");

/** Runs the bench with stdout and stderr kept apart: --json promises that stdout is only the array. */
const procs: Bun.Subprocess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill("SIGKILL");
});
async function runBench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn([process.execPath, RUN, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  procs.push(p);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, stdout, stderr };
}

const positiveOrNull = (v: unknown) => v === null || (typeof v === "number" && Number.isFinite(v) && v >= 0);

describe("bun run bench (smoke)", () => {
  test("--quick --json --only c prints only a JSON array of C reference rows with the documented fields", async () => {
    const { code, stdout, stderr } = await runBench(["--quick", "--json", "--only", "c"]);
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as Record<string, unknown>[]; // throws if stdout holds anything else
    expect(Array.isArray(rows)).toBe(true);
    const transports = new Set(rows.map((r) => r.transport));
    expect([...transports].sort()).toEqual(["c-pipe", "c-shm-spin", "c-uds"]);
    for (const r of rows) {
      expect(typeof r.name).toBe("string");
      expect(["closed-loop", "pipelined", "fixed-rate", "one-way"]).toContain(r.mode as string);
      expect(r.payload_bytes).toBe(32);
      for (const f of ["median_us", "p99_us", "calls_per_s", "cpu_us_per_call"]) {
        expect(f in r).toBe(true);
        expect(positiveOrNull(r[f])).toBe(true);
      }
      expect((r.iterations as number) > 0).toBe(true);
      if (r.mode === "one-way") expect(typeof r.cycles_one_way).toBe("number");
    }
    const oneWay = rows.filter((r) => r.mode === "one-way").map((r) => r.transport);
    expect(oneWay.sort()).toEqual(["c-shm-spin", "c-uds"]);
  }, 120_000);

  test("--quick --json --only uds runs real Bun server and client processes and yields every uds row kind", async () => {
    const { code, stdout, stderr } = await runBench(["--quick", "--json", "--only", "uds"]);
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as Record<string, unknown>[];
    const uds = rows.filter((r) => r.transport === "uds");
    expect(new Set(uds.map((r) => r.mode))).toEqual(new Set(["closed-loop", "pipelined", "fixed-rate", "one-way"]));
    const closed = uds.find((r) => r.mode === "closed-loop")!;
    expect((closed.iterations as number) > 0).toBe(true);
    expect((closed.cpu_us_per_call as number) > 0).toBe(true); // both processes' CPU was read from /proc
    expect((closed.server_cpu_us_per_call as number) > 0).toBe(true);
    expect(closed.ref).toBe("c-uds closed-loop");
    const sys = uds.find((r) => r.syscalls_per_call !== undefined)!;
    expect(["perf raw_syscalls:sys_enter", "proc-io (read+write only: a lower bound)"]).toContain(sys.syscalls_method as string);
    expect(uds.filter((r) => r.mode === "fixed-rate").map((r) => r.target_calls_per_s)).toEqual([0, 1000, 10000, 50000]);
    const oneWay = uds.find((r) => r.mode === "one-way")!;
    expect((oneWay.cycles_one_way as number) > 0).toBe(true);
    expect((oneWay.tsc_hz as number) > 0).toBe(true);
    // Nothing the bench started is left behind: an orphaned bench process would now have ppid 1.
    // (Others may be running the bench at the same time; their processes still have their parent.)
    const left = Bun.spawnSync(["pgrep", "-P", "1", "-f", "bench/(servers|clients)/"]).stdout.toString().trim();
    expect(left).toBe("");
  }, 120_000);

  test("--quick --json --only floor yields the RPC floor rows (one process, no server, no C reference)", async () => {
    const { code, stdout, stderr } = await runBench(["--quick", "--json", "--only", "floor"]);
    expect(code, stderr).toBe(0);
    const rows = JSON.parse(stdout) as Record<string, unknown>[];
    expect(rows.map((r) => [r.transport, r.mode, r.level, r.in_flight ?? 1])).toEqual([
      ["floor", "closed-loop", "rpc-floor", 1],
      ["floor", "pipelined", "rpc-floor", 64],
    ]);
    for (const r of rows) {
      expect((r.iterations as number) > 0).toBe(true);
      expect((r.cpu_us_per_call as number) > 0).toBe(true); // the whole process's CPU, from /proc
      expect(r.server_cpu_us_per_call).toBeUndefined(); // no separate server to split off
      expect(r.ref).toBeUndefined();
    }
  }, 120_000);

  test("an unknown --only name fails with a message listing the accepted names, not a stack trace", async () => {
    const { code, stdout, stderr } = await runBench(["--only", "udp"]);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toContain("--only: unknown name 'udp'; accepted: c, c-uds");
    expect(stderr).not.toContain("    at ");
  });
});
