// End to end on examples/hello with the real sidecar: `bun run mesh up`, then a standard gRPC client
// (@grpc/grpc-js) on 127.0.0.1:50051 and `GET :8080/hello` (frontend → its sidecar → greeter's sidecar →
// greeter app and back), kill -9 of the greeter app and then of its sidecar, and a SIGTERM that must
// leave no process, socket or shared-memory segment behind.
//
// The tests in this file run in order against one `mesh up` (starting it once keeps the suite fast);
// the example's ports are fixed (50051, 8080, 9901, 9902), so nothing else may use them meanwhile.
import { afterAll, beforeAll, describe, expect, test, setDefaultTimeout } from "bun:test";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { stopSupervisors } from "../mesh/supervisor/testdata/stop-supervisors.ts";
import { leakedShmSegments, REPO_ROOT, TestResources, waitFor, type Spawned, pidAlive } from "./helpers.ts";

// Real processes on a shared 2-vCPU machine: give each test room (the waits inside have their own deadlines).
setDefaultTimeout(60_000);

const MESH = join(REPO_ROOT, "mesh/cli/main.ts");
const PROTO = join(REPO_ROOT, "examples/hello/hello.proto");

const res = new TestResources();
/** Every `mesh up` started here; drained with SIGTERM at the end, whatever happened. */
const supervisors: Spawned["proc"][] = [];
function spawnUp(args: string[], env: Record<string, string>): Spawned {
  const p = res.spawnBun([MESH, "up", ...args], { env });
  supervisors.push(p.proc);
  return p;
}
let runtime = "";
let up: Spawned;
let shmBefore: string[] = [];

type Pids = Record<"greeter-app" | "greeter-sidecar" | "frontend-app" | "frontend-sidecar", number>;
interface StatusJson {
  pods: { name: string; processes: { role: string; pid: number | null; restarts: number; transport: string | null; state: string }[] }[];
}

async function status(): Promise<StatusJson> {
  const p = res.spawnBun([MESH, "status", "--json"], { env: { MESH_RUNTIME_DIR: runtime } });
  expect(await p.proc.exited).toBe(0);
  return JSON.parse(p.output().split("\n").find((l) => l.startsWith("{"))!) as StatusJson;
}

function pids(s: StatusJson): Partial<Pids> {
  const out: Record<string, number> = {};
  for (const pod of s.pods) for (const p of pod.processes) if (p.pid !== null && p.state === "running") out[`${pod.name}-${p.role}`] = p.pid;
  return out;
}


const def = protoLoader.loadSync(PROTO, { keepCase: true });
const hello = grpc.loadPackageDefinition(def).hello as unknown as { Greeter: grpc.ServiceClientConstructor };
let client: grpc.Client & Record<string, Function>;

function sayHello(name: string, timeoutMs = 3000): Promise<{ message: string }> {
  return new Promise((resolve, reject) => {
    client.SayHello!({ name }, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, reply: { message: string }) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

async function httpHello(name: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:8080/hello?name=${encodeURIComponent(name)}`, { signal: AbortSignal.timeout(5000) });
  return { status: r.status, body: await r.text() };
}

/** Both paths work: gRPC straight into greeter's sidecar, and HTTP through the frontend pod. */
async function bothPathsWork(name: string): Promise<true | undefined> {
  try {
    const g = await sayHello(name, 1000);
    const h = await httpHello(name);
    return g.message.includes(name) && h.status === 200 && h.body.includes(name) ? true : undefined;
  } catch {
    return undefined;
  }
}

beforeAll(async () => {
  runtime = join(res.scratchDir("rpal-mesh-hello-"), "rt");
  shmBefore = leakedShmSegments();
  up = spawnUp([], { MESH_RUNTIME_DIR: runtime });
  await up.waitForLine(/all 2 pod\(s\) running/, 30_000);
  client = new hello.Greeter("127.0.0.1:50051", grpc.credentials.createInsecure()) as unknown as typeof client;
});

afterAll(async () => {
  client?.close();
  await stopSupervisors(supervisors);
  await res.cleanup();
});

describe("mesh up on examples/hello (real sidecars)", () => {
  test("a @grpc/grpc-js client calls hello.Greeter on 127.0.0.1:50051", async () => {
    const reply = await sayHello("grpc-js");
    expect(reply.message).toBe("Hello, grpc-js!");
    // Server streaming goes through as well.
    const messages: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const call = client.SayHelloStream!({ name: "stream", count: 3 }, { deadline: Date.now() + 3000 }) as grpc.ClientReadableStream<{ message: string }>;
      call.on("data", (m) => messages.push(m.message));
      call.on("error", reject);
      call.on("end", () => resolve());
    });
    expect(messages).toEqual(["Hello #1, stream!", "Hello #2, stream!", "Hello #3, stream!"]);
  });

  test("GET :8080/hello goes frontend → its sidecar → greeter's sidecar → greeter and back", async () => {
    const r = await httpHello("ada");
    expect(r).toEqual({ status: 200, body: "Hello, ada!\n" });
    const stream = await fetch("http://127.0.0.1:8080/hello/stream?name=bob&count=2");
    expect(await stream.text()).toBe("Hello #1, bob!\nHello #2, bob!\n");
    // The frontend's sidecar really routed it: its metrics count the outbound call.
    const metrics = await (await fetch("http://127.0.0.1:9902/metrics")).text();
    expect(metrics).toContain("hello.Greeter");
  });

  test("mesh status --json: four processes, a transport each, no restarts", async () => {
    const s = await waitFor(async () => {
      const st = await status();
      return st.pods.every((p) => p.processes.every((q) => q.transport)) ? st : undefined;
    }, { what: "every pod to report its transport" });
    expect(s.pods.map((p) => p.name)).toEqual(["greeter", "frontend"]);
    for (const pod of s.pods) {
      expect(pod.processes.map((p) => p.role)).toEqual(["sidecar", "app"]);
      for (const p of pod.processes) {
        expect(["uds", "shm", "rpal"]).toContain(p.transport!);
        expect(p.restarts).toBe(0);
        expect(pidAlive(p.pid!)).toBe(true);
        // Sidecars get JSC's heap sized for a pod and no FTL tier (mesh/sidecar/process-env.ts); apps keep their own.
        const environ = readFileSync(`/proc/${p.pid}/environ`, "latin1").split("\0");
        expect(environ.includes("BUN_JSC_forceRAMSize=536870912")).toBe(p.role === "sidecar");
        expect(environ.includes("BUN_JSC_useFTLJIT=0")).toBe(p.role === "sidecar");
      }
    }
  });

  test("kill -9 of the greeter app: restarted, calls succeed again", async () => {
    const before = pids(await status());
    process.kill(before["greeter-app"]!, "SIGKILL");
    await up.waitForLine(/greeter\/app was killed by SIGKILL/);
    await up.waitForLine(/greeter\/app restarted \(pid \d+, restart #1\)/);
    await waitFor(() => bothPathsWork("after-app-restart"), { timeoutMs: 15_000, intervalMs: 100, what: "calls to succeed after the app restart" });
    const after = await status();
    const greeter = after.pods.find((p) => p.name === "greeter")!;
    expect(greeter.processes.find((p) => p.role === "app")!.restarts).toBe(1);
    expect(pids(after)["greeter-app"]).not.toBe(before["greeter-app"]);
    expect(pids(after)["greeter-sidecar"]).toBe(before["greeter-sidecar"]!);
  });

  test("kill -9 of the greeter sidecar: restarted, the app reconnects by itself, calls succeed again", async () => {
    const before = pids(await status());
    process.kill(before["greeter-sidecar"]!, "SIGKILL");
    await up.waitForLine(/greeter\/sidecar was killed by SIGKILL/);
    await up.waitForLine(/greeter\/sidecar ready again/, 20_000);
    await waitFor(() => bothPathsWork("after-sidecar-restart"), { timeoutMs: 15_000, intervalMs: 100, what: "calls to succeed after the sidecar restart" });
    const after = pids(await status());
    expect(after["greeter-sidecar"]).not.toBe(before["greeter-sidecar"]);
    // The app was not restarted: the SDK reconnected it to the new sidecar.
    expect(after["greeter-app"]).toBe(before["greeter-app"]!);
  });

  test("SIGTERM: exit 0, no process, socket or shared-memory segment left", async () => {
    const s = await status();
    const all = s.pods.flatMap((p) => p.processes.map((q) => q.pid!)).filter((p) => p !== null);
    expect(all.length).toBe(4);
    const runs = join(runtime, "runs");
    expect(readdirSync(runs).length).toBe(1);
    up.proc.kill("SIGTERM");
    expect(await up.proc.exited).toBe(0);
    for (const pid of all) expect(pidAlive(pid)).toBe(false);
    expect(readdirSync(runs)).toEqual([]);
    expect(existsSync(join(runs, "greeter"))).toBe(false);
    expect(leakedShmSegments().filter((n) => !shmBefore.includes(n))).toEqual([]);
    // The ports are free again.
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 50051, socket: { data() {} } });
    probe.stop(true);
  });
});

describe("mesh up --transport", () => {
  test("--transport uds forces uds for every pod; calls still work", async () => {
    const rt = join(res.scratchDir("rpal-mesh-hello-uds-"), "rt");
    const forced = spawnUp(["--transport", "uds"], { MESH_RUNTIME_DIR: rt });
    await forced.waitForLine(/all 2 pod\(s\) running/, 30_000);
    const p = res.spawnBun([MESH, "status", "--json"], { env: { MESH_RUNTIME_DIR: rt } });
    expect(await p.proc.exited).toBe(0);
    const s = JSON.parse(p.output().split("\n").find((l) => l.startsWith("{"))!) as StatusJson;
    expect(s.pods.flatMap((pod) => pod.processes.map((q) => q.transport))).toEqual(["uds", "uds", "uds", "uds"]);
    expect(await httpHello("uds")).toEqual({ status: 200, body: "Hello, uds!\n" });
    forced.proc.kill("SIGTERM");
    expect(await forced.proc.exited).toBe(0);
  });
});

describe("mesh up --transport rpal, against the librpal TEST DOUBLE (a stock kernel, not real RPAL)", () => {
  test("apps and sidecars run on the marked bun copy and their sessions use rpal; calls work", async () => {
    const scratch = res.scratchDir("rpal-mesh-hello-rpal-");
    const cache = join(scratch, "cache");
    const built = Bun.spawnSync([process.execPath, "-e", 'import {buildLibrpalTestDouble as b} from "./runtime/transport/rpal/double/build.ts"; console.log(b())'], {
      cwd: REPO_ROOT,
      env: { ...process.env, MESH_CACHE_DIR: cache },
    });
    const lib = built.stdout.toString().trim();
    expect(lib).toEndWith(".so");
    const env = { MESH_RUNTIME_DIR: join(scratch, "rt"), MESH_CACHE_DIR: cache, MESH_LIBRPAL: lib, MESH_RPAL_ALLOW_TEST_DOUBLE: "1" };
    const rpal = spawnUp(["--transport", "rpal"], env);
    await rpal.waitForLine(/all 2 pod\(s\) running/, 30_000);
    const p = res.spawnBun([MESH, "status", "--json"], { env });
    expect(await p.proc.exited).toBe(0);
    const s = JSON.parse(p.output().split("\n").find((l) => l.startsWith("{"))!) as StatusJson;
    expect(s.pods.flatMap((pod) => pod.processes.map((q) => q.transport))).toEqual(["rpal", "rpal", "rpal", "rpal"]);
    for (const pid of s.pods.flatMap((pod) => pod.processes.map((q) => q.pid!))) {
      expect(readlinkSync(`/proc/${pid}/exe`)).toStartWith(join(cache, "bun-rpal"));
    }
    expect(await httpHello("rpal")).toEqual({ status: 200, body: "Hello, rpal!\n" });
    expect((await sayHello("rpal-grpc")).message).toBe("Hello, rpal-grpc!");
    rpal.proc.kill("SIGTERM");
    expect(await rpal.proc.exited).toBe(0);
  });
});
