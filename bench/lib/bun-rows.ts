// The Bun rows: a bench server process (bench/servers/echo-sidecar.ts, the sidecar side) and a bench
// client process (bench/clients/rpc-client.ts, the app side) per transport variant, each pinned as the
// variant says. Unary 32-byte calls: closed loop, 64 in flight, a fixed-rate sweep, syscalls under
// load, and the seed's one-way TSC method. Plus the RPC floor ("floor"): the same client jobs with the
// server's channel and handler in the client process over an in-memory pair, no IPC (lib/rpc-floor.ts).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { localUnavailableReason } from "../../runtime/transport/negotiate.ts";
import type { TransportName } from "../../runtime/transport/types.ts";
import { type BenchOptions, selected } from "./args.ts";
import { buildC } from "./build-c.ts";
import { type ClientJob, type ClientResult, type ClientSpec, FLOOR } from "./client-protocol.ts";
import { cpusFor, pinPrefix } from "./placement.ts";
import type { BenchRow, Placement } from "./rows.ts";
import { startPerfCounter, startStraceCounter, type SyscallCount, type SyscallCounter } from "./syscalls.ts";
import { readLines } from "../../runtime/lines.ts";

const BENCH_DIR = join(import.meta.dir, "..");
const RATES = [1_000, 10_000, 50_000];
/** The fixed-rate client ticks every 1 ms whatever the rate; this baseline (no calls) is what that costs. */
const IDLE_RATE = 0;

interface Variant {
  /** FLOOR: no server process; rpc-client.ts serves the bench handler in-process (no IPC). */
  transport: TransportName | typeof FLOOR;
  /** The label rows carry: "rpal-double" when rpal runs against the test double. */
  label: string;
  spin?: string;
  placement: Placement;
  jobs: ClientJob[];
  env?: Record<string, string>;
  /** Frames through the transport API alone (echo-messages.ts + message-client.ts) instead of RPCs. */
  messages?: boolean;
}

interface Counts {
  closed: number;
  pipelined: number;
  syscalls: number;
  rateMs: number;
  oneWayUds: number;
  oneWaySpin: number;
}

function counts(opts: BenchOptions): Counts {
  if (opts.quick) return { closed: 2_000, pipelined: 10_000, syscalls: 5_000, rateMs: 400, oneWayUds: 3_000, oneWaySpin: 10_000 };
  // Closed-loop windows last ~2 s: CPU time from /proc/<pid>/stat moves in 10 ms ticks, and a 0.4 s
  // window of two processes swapping on one CPU read ±15% from tick to tick.
  if (opts.full) return { closed: 100_000, pipelined: 200_000, syscalls: 100_000, rateMs: 3_000, oneWayUds: 1_000_000, oneWaySpin: 1_000_000 };
  return { closed: 100_000, pipelined: 100_000, syscalls: 50_000, rateMs: 2_000, oneWayUds: 50_000, oneWaySpin: 200_000 };
}

function variants(opts: BenchOptions, notes: string[]): Variant[] {
  const c = counts(opts);
  const loadJobs = (): ClientJob[] => [
    { kind: "closed-loop", iterations: c.closed },
    { kind: "pipelined", iterations: c.pipelined, inFlight: 64 },
    { kind: "syscalls", iterations: c.syscalls, inFlight: 64 },
    ...[IDLE_RATE, ...RATES].map((rate): ClientJob => ({ kind: "fixed-rate", rate, durationMs: c.rateMs })),
  ];
  const out: Variant[] = [];
  if (selected(opts, "uds")) {
    out.push({ transport: "uds", label: "uds", placement: "same-cpu", jobs: loadJobs() });
    out.push({ transport: "uds", label: "uds", placement: "apart", jobs: [{ kind: "one-way", iterations: c.oneWayUds }] });
    out.push({ transport: "uds", label: "uds", placement: "apart", messages: true, jobs: [{ kind: "message-one-way", iterations: c.oneWayUds }] });
  }
  if (selected(opts, "shm")) {
    const why = localUnavailableReason("shm");
    if (why) notes.push(`shm rows: ${why}`);
    else {
      out.push({ transport: "shm", label: "shm", spin: "off", placement: "same-cpu", jobs: loadJobs(), env: { MESH_SHM_SPIN: "off" } });
      out.push({
        transport: "shm",
        label: "shm",
        spin: "100",
        placement: "apart",
        jobs: [
          { kind: "closed-loop", iterations: c.closed * 5 },
          { kind: "pipelined", iterations: c.pipelined, inFlight: 64 },
          { kind: "one-way", iterations: c.oneWaySpin },
        ],
        env: { MESH_SHM_SPIN: "100" },
      });
      // The default setting, adaptive spin, with a free core each: what a user gets out of the box.
      out.push({
        transport: "shm",
        label: "shm",
        spin: "auto",
        placement: "apart",
        jobs: [
          { kind: "closed-loop", iterations: c.closed * 2 },
          { kind: "pipelined", iterations: c.pipelined, inFlight: 64 },
          // What the issue's syscall target is about: the out-of-the-box setting under load.
          { kind: "syscalls", iterations: c.syscalls, inFlight: 64 },
        ],
        env: { MESH_SHM_SPIN: "auto" },
      });
      // RPAL's 1,703 cycles is a message between two processes, not an RPC: the same through our
      // transport API alone, with the fixed spin and the default one.
      for (const spin of ["100", "auto"]) {
        out.push({
          transport: "shm",
          label: "shm",
          spin,
          placement: "apart",
          messages: true,
          jobs: [{ kind: "message-one-way", iterations: c.oneWaySpin }],
          env: { MESH_SHM_SPIN: spin },
        });
      }
    }
  }
  if (selected(opts, "rpal")) {
    const rpalJobs = (): ClientJob[] => [
      { kind: "closed-loop", iterations: c.closed },
      { kind: "pipelined", iterations: c.pipelined, inFlight: 64 },
      { kind: "one-way", iterations: c.oneWayUds },
    ];
    const why = localUnavailableReason("rpal");
    if (!why) out.push({ transport: "rpal", label: "rpal", placement: "apart", jobs: rpalJobs() });
    else {
      // No RPAL here: run the same rows against the librpal TEST DOUBLE (user-space emulation), labelled
      // rpal-double so nobody reads them as RPAL figures. They measure our binding, receiver thread and
      // inbox ring, not the kernel's RPAL call.
      notes.push(`rpal rows: ${why} — measured against the librpal test double instead (rows labelled rpal-double, not RPAL figures)`);
      out.push({ transport: "rpal", label: "rpal-double", placement: "apart", jobs: rpalJobs() });
    }
  }
  if (selected(opts, "floor")) {
    // The RPC layer alone: what every transport's per-call CPU contains before any IPC. Same counts,
    // warm-up and time limits as the uds/shm closed-loop and pipelined rows; one process on one CPU,
    // as those rows put their two.
    out.push({
      transport: FLOOR,
      label: "floor",
      placement: "same-cpu",
      jobs: [
        { kind: "closed-loop", iterations: c.closed },
        { kind: "pipelined", iterations: c.pipelined, inFlight: 64 },
      ],
    });
  }
  return out;
}

/** Environment that makes both bench processes load the librpal TEST DOUBLE (built on first use). */
async function doubleEnv(): Promise<Record<string, string>> {
  const { buildLibrpalTestDouble } = await import("../../runtime/transport/rpal/double/build.ts");
  const { ALLOW_TEST_DOUBLE_ENV } = await import("../../runtime/transport/rpal/detect.ts");
  return { MESH_LIBRPAL: buildLibrpalTestDouble(), [ALLOW_TEST_DOUBLE_ENV]: "1" };
}

function describe(v: Variant, r: ClientResult): string {
  if (v.transport === FLOOR) return `RPC layer alone, in-process, no IPC, ${r.in_flight ?? 1} in flight`;
  const spin = v.spin !== undefined ? `, spin ${v.spin}` : "";
  switch (r.kind) {
    case "closed-loop":
      return `Bun ${v.label} unary 32 B, 1 in flight${spin}`;
    case "pipelined":
      return `Bun ${v.label} unary 32 B, ${r.in_flight} in flight${spin}`;
    case "syscalls":
      return `Bun ${v.label} syscalls under ${r.in_flight} in flight${spin}`;
    case "fixed-rate":
      if (!r.target_calls_per_s) return `Bun ${v.label} idle session + 1 ms ticker (no calls)${spin}`;
      return `Bun ${v.label} fixed rate ${(r.target_calls_per_s ?? 0) / 1000}k/s${spin}`;
    case "one-way":
      return `Bun ${v.label} one-way (seed method)${spin}`;
    case "message-one-way":
      return `Bun ${v.label} one-way, transport messages (no RPC)${spin}`;
  }
}

function toRow(v: Variant, placement: Placement, r: ClientResult, syscalls?: SyscallCount, method = ""): BenchRow {
  const row: BenchRow = {
    name: describe(v, r),
    transport: v.label,
    mode: r.kind === "syscalls" ? "pipelined" : r.kind === "message-one-way" ? "one-way" : r.kind,
    payload_bytes: 32,
    median_us: r.median_us,
    p99_us: r.p99_us,
    calls_per_s: r.calls_per_s,
    cpu_us_per_call: r.cpu_us_per_call,
    client_cpu_us_per_call: r.client_cpu_us_per_call,
    server_cpu_us_per_call: r.server_cpu_us_per_call,
    iterations: r.iterations,
    placement,
    ctx_switches_per_call: r.ctx_switches_per_call,
  };
  if (v.spin !== undefined) row.spin = v.spin;
  if (r.kind === "message-one-way") row.level = "transport";
  if (v.transport === FLOOR) {
    // One process: client and server CPU cannot be told apart; cpu_us_per_call is the whole process.
    row.level = "rpc-floor";
    row.client_cpu_us_per_call = row.server_cpu_us_per_call = undefined;
  }
  const notes = [v.label === "rpal-double" ? "librpal TEST DOUBLE (user-space emulation on a stock kernel): not an RPAL figure" : "", r.kind === "fixed-rate" ? "" : (r.note ?? "")];
  if (notes.some(Boolean)) row.note = notes.filter(Boolean).join("; ");
  if (r.in_flight !== undefined) row.in_flight = r.in_flight;
  if (r.kind === "fixed-rate" && !r.target_calls_per_s) {
    row.target_calls_per_s = 0;
    row.median_us = row.p99_us = row.cpu_us_per_call = null;
    row.client_cpu_us_per_call = row.server_cpu_us_per_call = undefined;
    row.calls_per_s = 0;
    row.vcpu_at_rate = r.cpu_ns_total / 1e6 / r.wall_ms;
    row.note = "baseline: what the open-loop ticker and an idle session cost per second";
  }
  if (r.kind === "fixed-rate" && r.target_calls_per_s) {
    row.target_calls_per_s = r.target_calls_per_s;
    row.cpu_ms_per_1000_calls = (r.cpu_ns_total / 1e6 / r.iterations) * 1000;
    row.vcpu_at_rate = r.cpu_ns_total / 1e6 / r.wall_ms;
    // An open-loop client that falls behind measures a different rate than it offered: say so.
    if (r.calls_per_s < 0.95 * r.target_calls_per_s || r.skipped) {
      row.note = `could not sustain the offered rate: ${Math.round(r.calls_per_s)} calls/s completed${r.note ? `; ${r.note}` : ""}`;
    }
  }
  if (r.kind === "syscalls") {
    row.syscalls_per_call = syscalls ? syscalls.total / r.iterations : r.io_syscalls_per_call;
    row.syscalls_method = syscalls ? method : "proc-io (read+write only: a lower bound)";
    if (syscalls) {
      const top = Object.entries(syscalls.byName).sort((a, b) => b[1] - a[1]).slice(0, 4);
      row.syscalls_top = Object.fromEntries(top.map(([name, n]) => [name, Math.round((n / r.iterations) * 1000) / 1000]));
    }
  }
  if (r.cycles) {
    row.cycles_one_way = Math.round(r.cycles.mean);
    row.cycles_one_way_median = Math.round(r.cycles.median);
    row.cycles_one_way_p99 = Math.round(r.cycles.p99);
    if (r.tsc_hz) row.tsc_hz = Math.round(r.tsc_hz);
    if (r.round_trip_median_us !== undefined) row.round_trip_median_us = r.round_trip_median_us;
  }
  return row;
}

/** Starts the variant's bench server process (see waitForReady). */
function spawnServer(v: Variant, cpu: number | undefined, socketPath: string, tscLib: string, env: Record<string, string>): Subprocess {
  const serverScript = v.messages ? "servers/echo-messages.ts" : "servers/echo-sidecar.ts";
  return Bun.spawn([...pinPrefix(cpu), process.execPath, join(BENCH_DIR, serverScript), socketPath, v.transport, tscLib], {
    env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
}

/** Waits for the server's READY line; throws with its stderr if it does not come. */
async function waitForReady(v: Variant, server: Subprocess): Promise<void> {
  const serverErr = new Response(server.stderr as ReadableStream).text();
  const ready = await Promise.race([
    (async () => {
      for await (const l of readLines(server.stdout as ReadableStream<Uint8Array>)) if (l.trim() === "READY") return true;
      return false;
    })(),
    Bun.sleep(15_000).then(() => false), // a deadline, not synchronisation
  ]);
  if (!ready) throw new Error(`bench server for ${v.label} did not start:\n${(await Promise.race([serverErr, Bun.sleep(200).then(() => "")])).slice(-1500)}`);
}

async function runVariant(v: Variant, opts: BenchOptions, onRow: (r: BenchRow) => void, notes: string[]): Promise<void> {
  const cpus = cpusFor(opts.placement ?? v.placement);
  const dir = mkdtempSync(join(tmpdir(), "rpal-mesh-bench-"));
  const socketPath = join(dir, "bench.sock");
  const tscLib = buildC("tsc");
  const env = { ...process.env, MESH_LOG_LEVEL: "warn", ...v.env, ...(v.label === "rpal-double" ? await doubleEnv() : {}) } as Record<string, string>;
  let server: Subprocess | undefined;
  let client: Subprocess<"pipe", "pipe", "pipe"> | undefined;
  try {
    if (v.transport !== FLOOR) {
      server = spawnServer(v, cpus.server, socketPath, tscLib, env);
      await waitForReady(v, server);
    }
    const spec: ClientSpec = { socketPath, transport: v.transport, serverPid: server?.pid, tscLib, maxJobMs: opts.quick ? 2_000 : opts.full ? 120_000 : 6_000, jobs: v.jobs };
    const clientScript = v.messages ? "clients/message-client.ts" : "clients/rpc-client.ts";
    client = Bun.spawn([...pinPrefix(cpus.client), process.execPath, join(BENCH_DIR, clientScript), JSON.stringify(spec)], {
      env,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const clientErr = new Response(client.stderr).text();
    // Each job is bounded in time by the client itself; a job that blows through this budget means the
    // transport stopped delivering (a lost wake-up): kill it and say so rather than hang the bench.
    const budgetMs = v.jobs.reduce((sum, j) => sum + (j.kind === "fixed-rate" ? j.durationMs : 0) + spec.maxJobMs * 1.25 + 15_000, 0);
    let hung = false;
    const deadline = setTimeout(() => {
      hung = true;
      client?.kill("SIGKILL");
    }, budgetMs);
    let perf: SyscallCounter | string | undefined;
    let counterMethod = "";
    let results = 0;
    let idleVcpu: number | undefined;
    for await (const l of readLines(client.stdout)) {
      if (!l.startsWith("{")) continue;
      const msg = JSON.parse(l) as ClientResult | { await: "go" };
      if ("await" in msg) {
        const pids = server ? [server.pid, client.pid] : [client.pid];
        // BENCH_SYSCALLS=strace forces the fallback (to compare the two methods, or when perf misbehaves).
        perf = process.env.BENCH_SYSCALLS === "strace" ? "perf skipped (BENCH_SYSCALLS=strace)" : startPerfCounter(pids);
        if (typeof perf === "string") {
          const why = perf;
          perf = await startStraceCounter(pids);
          if (typeof perf === "string") notes.push(`syscalls: ${why}; ${perf}; using /proc io counters (read+write only)`);
          else counterMethod = "strace -c -f";
        } else counterMethod = "perf raw_syscalls:sys_enter";
        if (typeof perf !== "string") perf.enable();
        client.stdin.write("go\n");
        client.stdin.flush();
        continue;
      }
      let sys: SyscallCount | undefined;
      if (msg.kind === "syscalls" && perf && typeof perf !== "string") {
        sys = await perf.finish();
        perf = undefined;
      }
      const row = toRow(v, cpus.placement, msg, sys, counterMethod);
      if (row.target_calls_per_s === 0) idleVcpu = row.vcpu_at_rate;
      else if (row.target_calls_per_s && idleVcpu !== undefined && row.vcpu_at_rate !== undefined && row.calls_per_s) {
        row.cpu_ms_per_1000_calls_net = ((row.vcpu_at_rate - idleVcpu) * 1e6) / row.calls_per_s;
      }
      onRow(row);
      results++;
    }
    clearTimeout(deadline);
    if (perf && typeof perf !== "string") perf.abort();
    const code = await client.exited;
    if (hung) {
      const job = v.jobs[results];
      throw new Error(
        `bench client for ${v.label} made no progress: job ${results + 1} of ${v.jobs.length} (${job?.kind}) had no result within the variant's ${Math.round(budgetMs / 1000)} s budget — calls stopped completing (both processes idle: a lost wake-up in the transport?)`,
      );
    }
    if (code !== 0 || results < v.jobs.length) {
      throw new Error(`bench client for ${v.label} failed (exit ${code ?? client.signalCode}, ${results}/${v.jobs.length} results):\n${(await clientErr).slice(-2000)}`);
    }
  } finally {
    // SIGTERM first so both run their exit handlers (releasing what the transport holds); SIGKILL
    // only if one is still there at the deadline.
    client?.kill("SIGTERM");
    server?.kill("SIGTERM");
    const exited = Promise.all([client?.exited, server?.exited]);
    if (!(await Promise.race([exited.then(() => true), Bun.sleep(5_000).then(() => false)]))) {
      client?.kill("SIGKILL");
      server?.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs the Bun rows. `notes` are things to know; `failures` are variants that hung or crashed. */
export async function runBunRows(opts: BenchOptions, onRow: (r: BenchRow) => void): Promise<{ notes: string[]; failures: string[] }> {
  const notes: string[] = [];
  const failures: string[] = [];
  for (const v of variants(opts, notes)) {
    try {
      await runVariant(v, opts, onRow, notes);
    } catch (e) {
      failures.push(`${v.label}${v.spin ? ` spin ${v.spin}` : ""}${v.messages ? " (transport messages)" : ""}: ${(e as Error).message}`);
    }
  }
  return { notes, failures };
}
