// The state file one `mesh up` keeps current for `mesh status`: which pods run, with which pids and
// restart counts. Written atomically (temp file + rename) with mode 0600; read defensively, since it
// is input like any other (a stale, truncated or foreign file must not crash `mesh status`).
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

export type Role = "app" | "sidecar";
export type ProcState = "starting" | "running" | "backoff" | "stopping" | "stopped" | "failed";

export interface ProcessState {
  role: Role;
  pid: number | null;
  restarts: number;
  state: ProcState;
  log: string;
}

export interface PodState {
  name: string;
  inbound: string | null;
  admin: string | null;
  app_socket: string;
  transport_requested: string;
  /** Last transport the sidecar reported on /status; `mesh status` asks the sidecar again. */
  transport: string | null;
  processes: ProcessState[];
}

export interface RunState {
  version: 1;
  run_id: string;
  supervisor_pid: number;
  config: string;
  started_at: string;
  pods: PodState[];
}

const RunStateSchema = z.object({
  version: z.literal(1),
  run_id: z.string(),
  supervisor_pid: z.number().int().positive(),
  config: z.string(),
  started_at: z.string(),
  pods: z.array(
    z.object({
      name: z.string(),
      inbound: z.string().nullable(),
      admin: z.string().nullable(),
      app_socket: z.string(),
      transport_requested: z.string(),
      transport: z.string().nullable(),
      processes: z.array(
        z.object({
          role: z.enum(["app", "sidecar"]),
          pid: z.number().int().nullable(),
          restarts: z.number().int(),
          state: z.enum(["starting", "running", "backoff", "stopping", "stopped", "failed"]),
          log: z.string(),
        }),
      ),
    }),
  ),
});

export const STATE_FILE = "state.json";

export function writeState(dir: string, state: RunState): void {
  const tmp = join(dir, `.${STATE_FILE}.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
  renameSync(tmp, join(dir, STATE_FILE));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the pid exists but belongs to someone else, so it is not our supervisor.
    return false;
  }
}

export interface RunsFound {
  runs: RunState[];
  /** Files that could not be read as a state file, with why (reported, never fatal). */
  problems: string[];
}

/**
 * True if `pid` is still the process this run started: a sidecar has the run's app socket on its
 * command line, an app has it as MESH_SOCKET. Pids get reused, so a bare pid is never enough.
 */
function stillOurs(pid: number, appSocket: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    if (cmdline.includes(appSocket)) return true;
    return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(`MESH_SOCKET=${appSocket}`);
  } catch {
    return false;
  }
}

/**
 * Every run under `runsDir` whose supervisor is still alive. A run whose supervisor died without
 * cleaning up (SIGKILL, OOM) is skipped; with `reapStale` its leftover processes get SIGTERM and its
 * directory (sockets, state) is removed — `mesh up` does that, `mesh status` only looks.
 */
export function readRuns(runsDir: string, opts: { reapStale?: boolean; onReap?: (msg: string) => void } = {}): RunsFound {
  const out: RunsFound = { runs: [], problems: [] };
  if (!existsSync(runsDir)) return out;
  for (const id of readdirSync(runsDir)) {
    const file = join(runsDir, id, STATE_FILE);
    if (!existsSync(file)) continue;
    let parsed: RunState;
    try {
      const text = readFileSync(file, "utf8");
      if (text.length > 4 * 1024 * 1024) throw new Error("larger than 4 MiB");
      parsed = RunStateSchema.parse(JSON.parse(text)) as RunState;
    } catch (e) {
      out.problems.push(`${file}: not a valid state file (${(e as Error).message.split("\n")[0]}) — delete it`);
      continue;
    }
    if (!alive(parsed.supervisor_pid)) {
      if (opts.reapStale) {
        const left = parsed.pods.flatMap((pod) =>
          pod.processes.filter((p) => p.pid !== null && stillOurs(p.pid, pod.app_socket)).map((p) => ({ pod: pod.name, ...p })),
        );
        for (const p of left) process.kill(p.pid!, "SIGTERM");
        if (left.length) {
          opts.onReap?.(
            `stopped ${left.length} process(es) left over by a mesh up (pid ${parsed.supervisor_pid}) that died: ${left.map((p) => `${p.pod}/${p.role} ${p.pid}`).join(", ")}`,
          );
        }
        rmSync(join(runsDir, id), { recursive: true, force: true });
      }
      continue;
    }
    out.runs.push(parsed);
  }
  out.runs.sort((a, b) => a.started_at.localeCompare(b.started_at));
  return out;
}
