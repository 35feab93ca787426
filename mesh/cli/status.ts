// `mesh status [--json]`: what every running `mesh up` of this user is running, read from the
// state files, with each sidecar asked (GET /status on its admin port) which transport it uses now.
import { join } from "node:path";
import { fetchSidecarStatus } from "../supervisor/admin-client.ts";
import { runtimeRoot } from "../supervisor/runtime-dir.ts";
import { readRuns, type RunState } from "../supervisor/state.ts";
import { renderStatusTable, sidecarPorts, type ProcessRow } from "../supervisor/table.ts";

export interface StatusJson {
  pods: {
    name: string;
    config: string;
    supervisor_pid: number;
    inbound: string | null;
    admin: string | null;
    processes: { role: "app" | "sidecar"; pid: number | null; restarts: number; state: string; transport: string | null }[];
  }[];
}

export async function collectStatus(runs: RunState[]): Promise<StatusJson> {
  const pods = runs.flatMap((run) => run.pods.map((pod) => ({ run, pod })));
  const live = await Promise.all(pods.map(({ pod }) => (pod.admin ? fetchSidecarStatus(pod.admin, 1000) : Promise.resolve(null))));
  return {
    pods: pods.map(({ run, pod }, i) => {
      // The sidecar's own answer is the truth; the state file's copy covers a sidecar that is restarting.
      const transport = live[i]?.transport ?? pod.transport;
      return {
        name: pod.name,
        config: run.config,
        supervisor_pid: run.supervisor_pid,
        inbound: pod.inbound,
        admin: pod.admin,
        processes: pod.processes.map((p) => ({ role: p.role, pid: p.pid, restarts: p.restarts, state: p.state, transport })),
      };
    }),
  };
}

export async function statusMain(flags: { json?: boolean }): Promise<number> {
  const { runs, problems } = readRuns(join(runtimeRoot(), "runs"));
  for (const p of problems) process.stderr.write(`mesh status: ${p}\n`);
  const status = await collectStatus(runs);
  if (flags.json) {
    process.stdout.write(`${JSON.stringify(status)}\n`);
    return 0;
  }
  if (status.pods.length === 0) {
    process.stdout.write("no mesh is running — start one with: bun run mesh up\n");
    return 0;
  }
  const rows: ProcessRow[] = status.pods.flatMap((pod) =>
    pod.processes.map((p) => ({
      pod: pod.name,
      role: p.role,
      pid: p.pid,
      state: p.state as ProcessRow["state"],
      transport: p.transport,
      ports: p.role === "sidecar" ? sidecarPorts(pod.inbound, pod.admin) : "",
      restarts: p.restarts,
    })),
  );
  const configs = [...new Set(runs.map((r) => `${r.config} (supervisor pid ${r.supervisor_pid})`))];
  process.stdout.write(`${configs.map((c) => `mesh up: ${c}`).join("\n")}\n${renderStatusTable(rows).join("\n")}\n`);
  return 0;
}
