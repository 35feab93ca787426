// Two "hosts" on one machine: two network namespaces joined by a veth pair, the greeter pod in one,
// the frontend pod in the other, and dnsmasq answering the greeter's Kubernetes service name the way
// cluster DNS would. The pods run the in-cluster mesh.yaml that `mesh k8s` renders into its ConfigMaps
// (paths mapped from /app back to this checkout), so the test exercises what a cluster would run:
// sidecars on 0.0.0.0, the frontend's upstream given as greeter-headless.default.svc.cluster.local.
//
// Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN for `ip netns`) and dnsmasq (Debian: apt-get install -y
// dnsmasq-base); without them the test is skipped and says why. Only addresses inside the namespaces
// this test creates are used (10.231.0.1/24 and 10.231.0.2/24 on the veth pair); nothing is configured
// in the host's own network namespace. Namespaces, /etc/netns/<ns>/ and processes are removed in
// afterAll, even when a test fails, and namespaces left by a killed earlier run are reaped at start.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { REPO_ROOT, TestResources, waitFor, type Spawned } from "./helpers.ts";
import { k8sMain } from "../mesh/k8s/main.ts";

const RUN = `${process.pid}`;
const NS_A = `rpalmesh-a-${RUN}`; // the greeter's "host"
const NS_B = `rpalmesh-b-${RUN}`; // the frontend's "host"
const ADDR_A = "10.231.0.1";
const ADDR_B = "10.231.0.2";
const ADDR_A2 = "10.231.0.3"; // where the greeter "moves" to
const ADDR_DNS = "10.231.0.53"; // the cluster DNS stand-in, on the greeter's host
const GREETER_DNS = "greeter-headless.default.svc.cluster.local";
const NS_RE = /^rpalmesh-[ab]-(\d+)$/;

function sh(cmd: string[]): { ok: boolean; out: string } {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, out: `${r.stdout.toString()}${r.stderr.toString()}`.trim() };
}

function must(cmd: string[]): string {
  const r = sh(cmd);
  if (!r.ok) throw new Error(`${cmd.join(" ")} failed: ${r.out}`);
  return r.out;
}

/** Why this machine cannot run the test, or undefined if it can. */
function missingPrerequisite(): string | undefined {
  if (process.platform !== "linux") return "network namespaces are Linux-only";
  if (!Bun.which("ip")) return "`ip` (iproute2) is not installed — apt-get install -y iproute2";
  if (!Bun.which("dnsmasq")) return "dnsmasq is not installed — apt-get install -y dnsmasq-base";
  const probe = `rpalmesh-probe-${RUN}`;
  const r = sh(["ip", "netns", "add", probe]);
  if (!r.ok) return `cannot create a network namespace (needs root / CAP_SYS_ADMIN): ${r.out}`;
  sh(["ip", "netns", "del", probe]);
  return undefined;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Namespaces from earlier runs that were killed before their afterAll. */
function reapStaleNamespaces(): void {
  for (const line of sh(["ip", "netns", "list"]).out.split("\n")) {
    const name = line.split(/\s/)[0] ?? "";
    const m = NS_RE.exec(name);
    if (m && !pidAlive(Number(m[1]))) {
      sh(["ip", "netns", "del", name]);
      rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
    }
  }
}

const etcNetnsExisted = existsSync("/etc/netns");

function removeNamespaces(): void {
  for (const ns of [NS_A, NS_B]) {
    sh(["ip", "netns", "del", ns]);
    rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
  }
  if (!etcNetnsExisted) {
    try {
      rmdirSync("/etc/netns"); // only if empty: another run may be using it
    } catch {}
  }
}

const skipReason = missingPrerequisite();
if (skipReason) console.warn(`test/multihost-k8s.test.ts skipped: ${skipReason}`);

/** The in-cluster mesh.yaml of `pod` from the manifests `mesh k8s` renders, with /app mapped to this checkout. */
async function inClusterConfig(outDir: string, pod: string): Promise<string> {
  const text = readFileSync(join(outDir, `${pod}.yaml`), "utf8");
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw new Error("manifest is not a YAML stream");
  const cm = docs.map((d) => d.toJS() as { kind: string; data?: Record<string, string> }).find((o) => o.kind === "ConfigMap");
  const yaml = cm?.data?.["mesh.yaml"];
  if (!yaml) throw new Error(`no mesh.yaml in the ConfigMap of ${pod}.yaml`);
  return yaml.replaceAll("/app/", `${REPO_ROOT}/`);
}

describe.skipIf(skipReason !== undefined)(`multi-host: greeter and frontend in two network namespaces, DNS discovery${skipReason ? ` (skipped: ${skipReason})` : ""}`, () => {
  const res = new TestResources();
  let dir = "";
  let dnsmasq: Spawned;
  let greeterConfig = "";
  let hostsFile = "";
  let greeterSidecar: Spawned;
  let greeterApp: Spawned;
  let frontendSidecar: Spawned;
  const greeterSocket = () => join(dir, "greeter", "app.sock");

  const inNs = (ns: string, cmd: string[], opts: { env?: Record<string, string>; cwd?: string } = {}) =>
    res.spawn(["ip", "netns", "exec", ns, ...cmd], opts);

  const startSidecar = (ns: string, config: string, pod: string, socket: string) =>
    inNs(ns, [process.execPath, join(REPO_ROOT, "mesh/sidecar/main.ts"), "--config", config, "--pod", pod, "--app-socket", socket], {
      env: { MESH_DNS_SERVERS: ADDR_DNS, MESH_LOG_LEVEL: "info" },
    });

  /** GET from inside the frontend's namespace (the frontend listens on that namespace's loopback). */
  async function getHello(name: string): Promise<{ status: number; body: string }> {
    const script = `
      try {
        const r = await fetch("http://127.0.0.1:8080/hello?name=${name}", { signal: AbortSignal.timeout(15000) });
        console.log(JSON.stringify({ status: r.status, body: await r.text() }));
      } catch (e) { console.log(JSON.stringify({ status: 0, body: String(e) })); }`;
    const p = inNs(NS_B, [process.execPath, "-e", script]);
    await p.proc.exited;
    const line = p.output().trim().split("\n").pop() ?? "";
    return JSON.parse(line) as { status: number; body: string };
  }

  // Like the kubelet with restartPolicy: Always: an app container that exits is started again. (The
  // serve-only greeter exits when its sidecar dies — its SDK's reconnect timer does not keep it alive.)
  let stopping = false;
  let greeterAppStarts = 0;
  function startGreeterApp(): void {
    greeterAppStarts++;
    greeterApp = inNs(NS_A, [process.execPath, "greeter.ts"], {
      cwd: join(REPO_ROOT, "examples/hello"),
      env: { MESH_SOCKET: greeterSocket(), MESH_TRANSPORT: "auto", MESH_POD: "greeter" },
    });
    const me = greeterApp;
    void me.proc.exited.then(() => {
      if (!stopping && me === greeterApp) setTimeout(() => !stopping && startGreeterApp(), 200);
    });
  }

  beforeAll(async () => {
    reapStaleNamespaces();
    dir = res.scratchDir("rpal-mesh-multihost-");

    // The "network": two namespaces, a veth pair created directly inside them (it never exists in the
    // host's namespace), one address per end, loopback up for each pod's own sidecar↔app traffic.
    must(["ip", "netns", "add", NS_A]);
    must(["ip", "netns", "add", NS_B]);
    must(["ip", "-n", NS_A, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", NS_B]);
    // So deleting the greeter's first address (the primary) keeps the others on the interface.
    must(["ip", "netns", "exec", NS_A, "sysctl", "-qw", "net.ipv4.conf.veth0.promote_secondaries=1"]);
    must(["ip", "-n", NS_A, "addr", "add", `${ADDR_A}/24`, "dev", "veth0"]);
    must(["ip", "-n", NS_A, "addr", "add", `${ADDR_DNS}/24`, "dev", "veth0"]);
    must(["ip", "-n", NS_B, "addr", "add", `${ADDR_B}/24`, "dev", "veth1"]);
    for (const [ns, dev] of [[NS_A, "veth0"], [NS_B, "veth1"]] as const) {
      must(["ip", "-n", ns, "link", "set", "lo", "up"]);
      must(["ip", "-n", ns, "link", "set", dev, "up"]);
      // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: the pod's view of
      // cluster DNS, exactly as the kubelet writes it.
      mkdirSync(`/etc/netns/${ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${ns}/resolv.conf`, `nameserver ${ADDR_DNS}\noptions timeout:1 attempts:2\n`);
    }

    // Cluster DNS stand-in: the headless Service's A record (from a hosts file, reloaded on SIGHUP like
    // endpoints changing) and its _grpc._tcp SRV record, TTL 1 s.
    hostsFile = join(dir, "cluster-dns.hosts");
    writeFileSync(hostsFile, `${ADDR_A} ${GREETER_DNS}\n`);
    dnsmasq = inNs(NS_A, [
      "dnsmasq",
      "--keep-in-foreground",
      "--no-resolv",
      "--no-hosts",
      "--no-poll",
      "--user=root",
      "--pid-file",
      `--listen-address=${ADDR_DNS}`,
      "--bind-interfaces",
      "--port=53",
      "--local=/cluster.local/",
      "--local-ttl=1",
      `--addn-hosts=${hostsFile}`,
      `--srv-host=_grpc._tcp.${GREETER_DNS},${GREETER_DNS},50051`,
      "--log-queries",
      "--log-facility=-",
    ]);
    await dnsmasq.waitForLine(/started, version/);

    // The configs the cluster would run, rendered by mesh k8s from examples/hello.
    const out = join(dir, "manifests");
    const code = await k8sMain([join(REPO_ROOT, "examples/hello/mesh.yaml"), "--out", out, "--context", REPO_ROOT], { out: () => {}, err: (l) => console.error(l) });
    expect(code).toBe(0);
    for (const pod of ["greeter", "frontend"]) {
      mkdirSync(join(dir, pod), { mode: 0o700 });
      writeFileSync(join(dir, pod, "mesh.yaml"), await inClusterConfig(out, pod));
    }
    greeterConfig = join(dir, "greeter", "mesh.yaml");
    expect(readFileSync(join(dir, "frontend", "mesh.yaml"), "utf8")).toContain(`dns: ${GREETER_DNS}:50051`);

    greeterSidecar = startSidecar(NS_A, greeterConfig, "greeter", greeterSocket());
    await greeterSidecar.waitForLine(/"event":"ready"/);
    startGreeterApp();

    const frontendSocket = join(dir, "frontend", "app.sock");
    frontendSidecar = startSidecar(NS_B, join(dir, "frontend", "mesh.yaml"), "frontend", frontendSocket);
    await frontendSidecar.waitForLine(/"event":"ready"/);
    const frontend = inNs(NS_B, [process.execPath, "frontend.ts"], {
      cwd: join(REPO_ROOT, "examples/hello"),
      env: { MESH_SOCKET: frontendSocket, MESH_TRANSPORT: "auto", MESH_POD: "frontend", FRONTEND_PORT: "8080", FRONTEND_HOST: "127.0.0.1" },
    });
    await frontend.waitForLine(/frontend: http:/);
  }, 60_000);

  afterAll(async () => {
    stopping = true;
    await res.cleanup();
    removeNamespaces();
  });

  test("GET /hello in the frontend's namespace reaches the greeter across the hosts, found through DNS", async () => {
    const r = await waitFor(
      async () => {
        const x = await getHello("ada");
        return x.status === 200 ? x : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100, what: "GET /hello to succeed" },
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\n--- dnsmasq ---\n${dnsmasq.output().slice(-2000)}`);
    });
    expect(r.body.trim()).toBe("Hello, ada!");
    // The frontend's sidecar (10.231.0.2) asked the cluster DNS for the greeter's service name.
    expect(dnsmasq.output()).toMatch(new RegExp(`query\\[A\\] ${GREETER_DNS.replaceAll(".", "\\.")} from ${ADDR_B.replaceAll(".", "\\.")}`));
  }, 30_000);

  test("killing the greeter's sidecar makes calls fail fast; they recover when it returns", async () => {
    const sidecar = greeterSidecar;
    await waitFor(async () => (await getHello("pre")).status === 200, { timeoutMs: 20_000, intervalMs: 100, what: "a working path first" });
    sidecar.proc.kill("SIGKILL");
    await sidecar.proc.exited;

    // Connection refused on 10.231.0.1:50051: an error response, long before the 15 s probe abort
    // (status 0) — the frontend does not wait out its deadline on a dead host.
    const failed = await getHello("down");
    expect(failed.status).toBe(502);
    expect(failed.body).toContain("UNAVAILABLE");

    // The sidecar comes back (as the kubelet would restart it); the greeter app's SDK reconnects.
    const again = startSidecar(NS_A, greeterConfig, "greeter", greeterSocket());
    await again.waitForLine(/"event":"ready"/);
    let last: { status: number; body: string } | undefined;
    const r = await waitFor(
      async () => {
        last = await getHello("back");
        return last.status === 200 ? last : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "GET /hello to succeed again after the sidecar returned" },
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\nlast response: ${JSON.stringify(last)}\n--- greeter app (exit ${greeterApp.proc.exitCode}) ---\n${greeterApp.output().slice(-3000)}\n--- greeter sidecar (restarted) ---\n${again.output().slice(-3000)}\n--- frontend sidecar ---\n${frontendSidecar.output().slice(-3000)}`);
    });
    expect(r.body.trim()).toBe("Hello, back!");
    if (greeterAppStarts > 1) console.warn(`multihost: the greeter app exited while its sidecar was down and was restarted (${greeterAppStarts - 1}×), as the kubelet would`);
  }, 60_000);

  test("when the greeter moves to another address, the frontend follows DNS (re-resolved on TTL)", async () => {
    await waitFor(async () => (await getHello("pre")).status === 200, { timeoutMs: 20_000, intervalMs: 100, what: "a working path first" });
    // The pod gets a new IP: the new address appears, the Service's record changes, the old address goes.
    must(["ip", "-n", NS_A, "addr", "add", `${ADDR_A2}/24`, "dev", "veth0"]);
    writeFileSync(hostsFile, `${ADDR_A2} ${GREETER_DNS}\n`);
    dnsmasq.proc.kill("SIGHUP");
    must(["ip", "-n", NS_A, "addr", "del", `${ADDR_A}/24`, "dev", "veth0"]);
    // Nothing answers on the old address any more, so success means the frontend re-resolved.
    let last: { status: number; body: string } | undefined;
    const r = await waitFor(
      async () => {
        last = await getHello("moved");
        return last.status === 200 ? last : undefined;
      },
      { timeoutMs: 40_000, intervalMs: 200, what: "GET /hello to reach the greeter at its new address" },
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\nlast response: ${JSON.stringify(last)}\n--- frontend sidecar ---\n${frontendSidecar.output().slice(-3000)}`);
    });
    expect(r.body.trim()).toBe("Hello, moved!");
    const addrs = must(["ip", "-n", NS_A, "-o", "-4", "addr", "show", "dev", "veth0"]);
    expect(addrs).not.toContain(`${ADDR_A}/`);
    expect(addrs).toContain(`${ADDR_A2}/`);
  }, 60_000);

  test("the namespaces are really apart: the host namespace cannot reach the greeter's address", () => {
    // Guards the premise of the test (and that nothing leaked into the host's network namespace).
    expect(sh(["ip", "-o", "addr", "show"]).out).not.toContain(ADDR_A);
    expect(existsSync(`/etc/netns/${NS_B}/resolv.conf`)).toBe(true);
  });
});
