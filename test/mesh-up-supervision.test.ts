// `mesh up` as a supervisor, with a stand-in sidecar (mesh/supervisor/testdata/fake-sidecar.ts) that
// keeps the process contract: these tests are about starting, restarting, status and draining, and
// use only ports the OS picks, so they never collide with examples/hello.
import { afterEach, describe, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stopSupervisors } from "../mesh/supervisor/testdata/stop-supervisors.ts";
import { REPO_ROOT, TestResources, waitFor, type Spawned, pidAlive } from "./helpers.ts";

// Real processes on a shared 2-vCPU machine: give each test room (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const FAKE_SIDECAR = join(REPO_ROOT, "mesh/supervisor/testdata/fake-sidecar.ts");
const FAKE_APP = join(REPO_ROOT, "mesh/supervisor/testdata/fake-app.ts");
const MESH = join(REPO_ROOT, "mesh/cli/main.ts");

const res = new TestResources();
/** Children of a supervisor the test SIGKILLed: TestResources does not know them, so kill them here. */
const orphanPids: number[] = [];
/** Every `mesh up` started here; drained with SIGTERM after each test, whatever happened. */
const supervisors: Spawned["proc"][] = [];
afterEach(async () => {
  await stopSupervisors(supervisors);
  for (const pid of orphanPids.splice(0)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone: the expected case
    }
  }
  await res.cleanup();
});

interface StatusJson {
  pods: { name: string; processes: { role: "app" | "sidecar"; pid: number | null; restarts: number; transport: string | null; state: string }[] }[];
}

function spawnUp(args: string[], opts: { env: Record<string, string> }): Spawned {
  const up = res.spawnBun([MESH, "up", ...args], opts);
  supervisors.push(up.proc);
  return up;
}

function setup(appEnv = "") {
  const dir = res.scratchDir("rpal-mesh-sup-");
  const runtime = join(dir, "rt");
  const config = join(dir, "mesh.yaml");
  writeFileSync(
    config,
    `version: 1
pods:
  - name: alpha
    app: { command: bun, args: [${FAKE_APP}]${appEnv} }
    sidecar:
      inbound: { port: 0 }
  - name: beta
    app: { command: bun, args: [${FAKE_APP}] }
`,
  );
  const env = { MESH_RUNTIME_DIR: runtime, MESH_SIDECAR_ENTRY: FAKE_SIDECAR };
  return { dir, runtime, config, env };
}

async function status(env: Record<string, string>): Promise<StatusJson> {
  const p = res.spawnBun([MESH, "status", "--json"], { env });
  expect(await p.proc.exited).toBe(0);
  const line = p.output().split("\n").find((l) => l.startsWith("{"));
  if (!line) throw new Error(`mesh status printed no JSON:\n${p.output()}`);
  return JSON.parse(line) as StatusJson;
}

function pidOf(s: StatusJson, pod: string, role: "app" | "sidecar"): number | null {
  return s.pods.find((p) => p.name === pod)?.processes.find((p) => p.role === role)?.pid ?? null;
}


async function upAndRunning(env: Record<string, string>, config: string, extra: string[] = []): Promise<Spawned> {
  const up = spawnUp([config, ...extra], { env });
  await up.waitForLine(/all 2 pod\(s\) running/, 20_000);
  return up;
}

describe("mesh up supervises pods (stand-in sidecar)", () => {
  test("starts sidecars then apps; mesh status --json reports pids, restarts and transport", async () => {
    const { config, env, runtime } = setup();
    const up = await upAndRunning(env, config);
    // The sidecar's ready line comes before its app is started, for every pod.
    const out = up.output();
    expect(out.indexOf("alpha/sidecar ready")).toBeGreaterThan(-1);
    const s = await waitFor(
      async () => {
        const st = await status(env);
        return st.pods.every((p) => p.processes.every((q) => q.transport === "uds")) ? st : undefined;
      },
      { what: "both pods to report transport uds", timeoutMs: 10_000 },
    );
    expect(s.pods.map((p) => p.name)).toEqual(["alpha", "beta"]);
    for (const pod of s.pods) {
      expect(pod.processes.map((p) => p.role)).toEqual(["sidecar", "app"]);
      for (const p of pod.processes) {
        expect(p.restarts).toBe(0);
        expect(p.pid).not.toBeNull();
        expect(pidAlive(p.pid!)).toBe(true);
      }
    }
    // The runtime directory and the state file are private.
    expect(statSync(runtime).mode & 0o777).toBe(0o700);
    const runs = readdirSync(join(runtime, "runs"));
    expect(runs.length).toBe(1);
    expect(statSync(join(runtime, "runs", runs[0]!, "state.json")).mode & 0o777).toBe(0o600);
    expect(statSync(join(runtime, "runs", runs[0]!, "alpha", "app.sock")).isSocket()).toBe(true);
    // The text form lists every process.
    const text = res.spawnBun([MESH, "status"], { env });
    expect(await text.proc.exited).toBe(0);
    expect(text.output()).toMatch(/POD\s+PROCESS\s+PID\s+STATE\s+TRANSPORT\s+PORTS\s+RESTARTS/);
    expect(text.output()).toMatch(/alpha\s+sidecar\s+\d+\s+running\s+uds\s+inbound 127\.0\.0\.1:\d+ admin 127\.0\.0\.1:\d+\s+0/);
    up.proc.kill("SIGTERM");
    expect(await up.proc.exited).toBe(0);
  });

  test("kill -9 of an app, then of a sidecar: each is restarted and says so", async () => {
    const { config, env } = setup();
    const up = await upAndRunning(env, config);
    const before = await status(env);
    const app = pidOf(before, "alpha", "app")!;
    process.kill(app, "SIGKILL");
    const afterApp = await waitFor(
      async () => {
        const s = await status(env);
        const pid = pidOf(s, "alpha", "app");
        return pid && pid !== app ? s : undefined;
      },
      { what: "alpha's app to be restarted", timeoutMs: 10_000 },
    );
    expect(afterApp.pods[0]!.processes[1]!.restarts).toBe(1);
    expect(up.output()).toMatch(/alpha\/app was killed by SIGKILL after [\d.]+s — restarting in 0\.25s/);
    await up.waitForLine(/alpha\/app restarted \(pid \d+, restart #1\)/);

    const sidecar = pidOf(afterApp, "alpha", "sidecar")!;
    process.kill(sidecar, "SIGKILL");
    const afterSidecar = await waitFor(
      async () => {
        const s = await status(env);
        const pid = pidOf(s, "alpha", "sidecar");
        const proc = s.pods[0]!.processes[0]!;
        return pid && pid !== sidecar && proc.state === "running" ? s : undefined;
      },
      { what: "alpha's sidecar to be restarted", timeoutMs: 10_000 },
    );
    expect(afterSidecar.pods[0]!.processes[0]!.restarts).toBe(1);
    await up.waitForLine(/alpha\/sidecar ready again/);
    // The app was not restarted because its sidecar was.
    expect(pidOf(afterSidecar, "alpha", "app")).toBe(pidOf(afterApp, "alpha", "app"));
    up.proc.kill("SIGTERM");
    expect(await up.proc.exited).toBe(0);
  });

  test("a crash-looping app is restarted with growing backoff", async () => {
    const { config, env } = setup(", env: { FAKE_APP_MODE: crash }");
    const up = spawnUp([config], { env });
    await up.waitForLine(/alpha\/app exited with code 1 .* restarting in 1\.00s/, 10_000);
    const out = up.output();
    expect(out).toMatch(/alpha\/app exited with code 1 .* restarting in 0\.25s\n\s+fake app: crashing on purpose/);
    expect(out).toMatch(/restarting in 0\.50s/);
    up.proc.kill("SIGTERM");
    expect(await up.proc.exited).toBe(0);
  });

  test("SIGTERM drains everything: exit 0, no process, socket or state file left", async () => {
    const { config, env, runtime } = setup();
    const up = await upAndRunning(env, config);
    const s = await status(env);
    const pids = s.pods.flatMap((p) => p.processes.map((q) => q.pid!));
    expect(pids.length).toBe(4);
    const runDir = join(runtime, "runs", readdirSync(join(runtime, "runs"))[0]!);
    expect(existsSync(join(runDir, "beta", "app.sock"))).toBe(true);
    up.proc.kill("SIGTERM");
    expect(await up.proc.exited).toBe(0);
    expect(up.output()).toContain("SIGTERM received — stopping apps, then sidecars");
    for (const pid of pids) expect(pidAlive(pid)).toBe(false);
    expect(existsSync(runDir)).toBe(false);
    expect((await status(env)).pods).toEqual([]);
  });

  test.skipIf(!Bun.which("setpriv"))("a supervisor killed with SIGKILL: its children get SIGTERM from the kernel and exit", async () => {
    const { config, env, runtime } = setup();
    const first = await upAndRunning(env, config);
    const children = (await status(env)).pods.flatMap((p) => p.processes.map((q) => q.pid!));
    orphanPids.push(...children);
    expect(children.length).toBe(4);
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    await waitFor(() => children.every((pid) => !pidAlive(pid)), { what: "the children to exit after their supervisor died" });
    // The run directory is left (nobody removed it), and the next mesh up clears it.
    expect(readdirSync(join(runtime, "runs")).length).toBe(1);
    const second = await upAndRunning(env, config);
    expect(readdirSync(join(runtime, "runs")).length).toBe(1);
    second.proc.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
  });

  test("without the parent-death signal (MESH_PDEATHSIG=0): the next mesh up stops what a SIGKILLed one left", async () => {
    const { config, env: baseEnv, runtime } = setup();
    const env = { ...baseEnv, MESH_PDEATHSIG: "0" };
    const first = await upAndRunning(env, config);
    const orphans = (await status(env)).pods.flatMap((p) => p.processes.map((q) => q.pid!));
    orphanPids.push(...orphans);
    first.proc.kill("SIGKILL");
    await first.proc.exited;
    // Children run in their own process group, so they outlive a SIGKILLed supervisor…
    for (const pid of orphans) expect(pidAlive(pid)).toBe(true);
    // …until the next `mesh up` recognises them (by their app socket) and stops them.
    const second = await upAndRunning(env, config);
    expect(second.output()).toMatch(/stopped 4 process\(es\) left over by a mesh up \(pid \d+\) that died/);
    await waitFor(() => orphans.every((pid) => !pidAlive(pid)), { what: "the orphans to exit" });
    expect(readdirSync(join(runtime, "runs")).length).toBe(1);
    second.proc.kill("SIGTERM");
    expect(await second.proc.exited).toBe(0);
  });

  test("a sidecar that fails to start: exit 1, the pod is named, nothing left running", async () => {
    const { config, env, runtime } = setup();
    const up = spawnUp([config], { env: { ...env, FAKE_SIDECAR_MODE: "fail" } });
    expect(await up.proc.exited).toBe(1);
    expect(up.output()).toMatch(/pod (alpha|beta): its sidecar failed to start: exited with code 3/);
    expect(up.output()).toContain("fake sidecar: failing on purpose");
    expect(up.output()).not.toContain("    at ");
    expect(readdirSync(join(runtime, "runs"))).toEqual([]);
  });

  test("SIGTERM while sidecars are still starting: exit 0 at once, nothing left", async () => {
    const { config, env, runtime } = setup();
    const up = spawnUp([config, "--ready-timeout", "60"], { env: { ...env, FAKE_SIDECAR_MODE: "hang" } });
    await up.waitForLine(/starting 2 pod\(s\)/);
    const runs = join(runtime, "runs");
    const state = await waitFor(() => {
      const id = existsSync(runs) ? readdirSync(runs)[0] : undefined;
      if (!id || !existsSync(join(runs, id, "state.json"))) return undefined;
      const st = JSON.parse(readFileSync(join(runs, id, "state.json"), "utf8")) as { pods: { processes: { pid: number | null }[] }[] };
      const pids = st.pods.map((p) => p.processes[0]!.pid);
      return pids.every((p) => p !== null) ? (pids as number[]) : undefined;
    }, { what: "both sidecars to be spawned" });
    up.proc.kill("SIGTERM");
    expect(await up.proc.exited).toBe(0);
    for (const pid of state) expect(pidAlive(pid)).toBe(false);
    expect(readdirSync(runs)).toEqual([]);
  });

  test("a sidecar that never becomes ready: exit 1 after --ready-timeout", async () => {
    const { config, env } = setup();
    const up = spawnUp([config, "--ready-timeout", "1"], { env: { ...env, FAKE_SIDECAR_MODE: "hang" } });
    expect(await up.proc.exited).toBe(1);
    expect(up.output()).toMatch(/pod (alpha|beta): its sidecar failed to start: did not print its ready line within 1s/);
  });
});
