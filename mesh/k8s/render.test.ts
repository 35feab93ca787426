// The manifests `mesh k8s` writes for examples/hello, read back from the YAML text and validated
// against the Kubernetes OpenAPI schemas (kubernetes-models), plus the pod wiring the shm/uds
// transports need and the user errors.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1";
import { ConfigMap, Service } from "kubernetes-models/v1";
import type { IContainer } from "kubernetes-models/v1/Container";
import { REPO_ROOT, TestResources } from "../../test/helpers.ts";
import { loadConfig, parseConfig } from "../config/index.ts";
import { k8sMain } from "./main.ts";
import { K8sRenderError } from "./names.ts";
import { renderAll, type RenderOptions } from "./render.ts";
import { sidecarProcessEnv } from "../sidecar/process-env.ts";

const HELLO = join(REPO_ROOT, "examples/hello/mesh.yaml");
const res = new TestResources();
afterEach(() => res.cleanup());

type K8sObject = Deployment | Service | ConfigMap;

/** Parses a written manifest file and validates every document with the model of its kind. */
function readManifests(path: string): K8sObject[] {
  const docs = parseAllDocuments(readFileSync(path, "utf8"));
  if (!Array.isArray(docs)) throw new Error(`${path}: not a YAML stream`);
  return docs.map((d) => {
    expect(d.errors).toEqual([]);
    const data = d.toJS() as { kind: string };
    const obj =
      data.kind === "Deployment"
        ? new Deployment(data as never)
        : data.kind === "Service"
          ? new Service(data as never)
          : data.kind === "ConfigMap"
            ? new ConfigMap(data as never)
            : undefined;
    if (!obj) throw new Error(`${path}: unexpected kind ${data.kind}`);
    obj.validate(); // throws with the JSON-schema path of the first violation
    return obj;
  });
}

async function renderHello(extra: string[] = []): Promise<{ out: string; files: string[]; code: number }> {
  const fail: string[] = [];
  const out = join(res.scratchDir("rpal-mesh-k8s-"), "out");
  const code = await k8sMain([HELLO, "--out", out, "--context", REPO_ROOT, ...extra], { out: () => {}, err: (l) => void fail.push(l) });
  if (code !== 0) throw new Error(`mesh k8s exited ${code}: ${fail.join("\n")}`);
  return { out, files: code === 0 ? readdirSync(out).sort() : [], code };
}

const byKind = <T extends K8sObject>(objs: K8sObject[], kind: string, name?: string) =>
  objs.filter((o) => o.kind === kind && (name === undefined || o.metadata?.name === name)) as T[];

function podSpec(objs: K8sObject[]) {
  const [dep] = byKind<Deployment>(objs, "Deployment");
  expect(dep).toBeDefined();
  return dep!.spec!.template.spec!;
}

describe("mesh k8s on examples/hello", () => {
  test("one file per pod, every document valid against the Kubernetes schemas", async () => {
    const { out, files, code } = await renderHello();
    expect(code).toBe(0);
    expect(files).toEqual(["frontend.yaml", "greeter.yaml"]);
    const greeter = readManifests(join(out, "greeter.yaml"));
    expect(greeter.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual([
      "ConfigMap/greeter-mesh",
      "Service/greeter",
      "Service/greeter-headless",
      "Deployment/greeter",
    ]);
    const frontend = readManifests(join(out, "frontend.yaml"));
    expect(frontend.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual(["ConfigMap/frontend-mesh", "Service/frontend", "Deployment/frontend"]);
  });

  test("the schema check is real: a broken manifest is rejected", async () => {
    const { out } = await renderHello();
    const text = readFileSync(join(out, "greeter.yaml"), "utf8").replace("containerPort: 50051", "containerPort: fifty");
    writeFileSync(join(out, "greeter.yaml"), text);
    expect(() => readManifests(join(out, "greeter.yaml"))).toThrow(/containerPort must be integer/);
  });

  test("the sidecar is a native sidecar sharing the socket dir and a memory-backed /dev/shm with the app", async () => {
    const { out } = await renderHello();
    const spec = podSpec(readManifests(join(out, "greeter.yaml")));
    const sidecar = spec.initContainers?.[0] as IContainer;
    expect(sidecar.name).toBe("mesh-sidecar");
    expect(sidecar.restartPolicy).toBe("Always");
    expect(spec.containers.map((c) => c.name)).toEqual(["app"]);
    const app = spec.containers[0]!;

    const vol = (name: string) => spec.volumes?.find((v) => v.name === name);
    expect(vol("mesh-socket")?.emptyDir).toEqual({});
    expect(vol("dshm")?.emptyDir?.medium).toBe("Memory");
    // shm's app opens the sidecar's memfd via /proc/<pid>/fd: one PID namespace for the pod.
    expect(spec.shareProcessNamespace).toBe(true);
    for (const c of [sidecar, app]) {
      const mount = (name: string) => c.volumeMounts?.find((m) => m.name === name)?.mountPath;
      expect(mount("dshm")).toBe("/dev/shm");
      expect(mount("mesh-socket")).toBe("/var/run/rpal-mesh");
    }
    // The sidecar listens where the app connects.
    expect(sidecar.command).toContain("/var/run/rpal-mesh/sock/app.sock");
    expect(app.env).toContainEqual({ name: "MESH_SOCKET", value: "/var/run/rpal-mesh/sock/app.sock" });
    expect(app.env).toContainEqual({ name: "MESH_POD", value: "greeter" });
    // The sidecar gets the runtime settings mesh up gives its sidecars; the app does not.
    for (const [name, value] of Object.entries(sidecarProcessEnv({}))) {
      expect(sidecar.env).toContainEqual({ name, value });
      expect(app.env?.some((e) => e.name === name)).toBe(false);
    }
    expect(Object.keys(sidecarProcessEnv({})).length).toBeGreaterThan(0);
    // Both run as the same non-root user, so the owner-only socket and segments work for both.
    expect(spec.securityContext?.runAsUser).toBe(1000);
    expect(spec.securityContext?.runAsNonRoot).toBe(true);
  });

  test("probes on the sidecar's admin port, drain-matched termination, resource requests", async () => {
    const { out } = await renderHello();
    const config = loadConfig(HELLO);
    const spec = podSpec(readManifests(join(out, "greeter.yaml")));
    const sidecar = spec.initContainers![0]!;
    const adminPort = sidecar.ports?.find((p) => p.name === "admin")?.containerPort;
    expect(adminPort).toBe(config.pods[0]!.sidecar.admin.port);
    expect(sidecar.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "admin" });
    expect(sidecar.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "admin" });
    expect(sidecar.startupProbe?.httpGet?.path).toBe("/healthz");
    const drain = config.pods[0]!.sidecar.drain_seconds;
    const app = spec.containers[0]!;
    expect(app.lifecycle?.preStop?.sleep?.seconds).toBe(Math.ceil(drain));
    expect(spec.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(2 * drain);
    expect(sidecar.resources?.requests).toEqual({ cpu: "50m", memory: "64Mi" });
    expect(app.resources?.requests).toEqual({ cpu: "100m", memory: "128Mi" });
    expect(spec.nodeSelector).toBeUndefined(); // rpal is opt-in only
  });

  test("Services: a ClusterIP per pod and a headless one for the pod that serves gRPC; the app's HTTP port is exposed", async () => {
    const { out } = await renderHello();
    const greeter = readManifests(join(out, "greeter.yaml"));
    const [svc] = byKind<Service>(greeter, "Service", "greeter");
    const [headless] = byKind<Service>(greeter, "Service", "greeter-headless");
    expect(svc!.spec!.ports!.map((p) => `${p.name}:${p.port}`)).toEqual(["grpc:50051", "admin:9901"]);
    expect(headless!.spec!.clusterIP).toBe("None");
    expect(headless!.spec!.ports!.map((p) => `${p.name}:${p.port}`)).toEqual(["grpc:50051"]);
    const frontend = readManifests(join(out, "frontend.yaml"));
    const [fsvc] = byKind<Service>(frontend, "Service", "frontend");
    expect(fsvc!.spec!.ports!.map((p) => `${p.name}:${p.port}`)).toEqual(["http:8080", "admin:9902"]);
    expect(byKind(frontend, "Service", "frontend-headless")).toEqual([]);
    expect(podSpec(frontend).containers[0]!.ports).toEqual([{ name: "http", containerPort: 8080, protocol: "TCP" }]);
    // FRONTEND_PORT is served on the pod IP, so the app is told to listen on all interfaces.
    expect(podSpec(frontend).containers[0]!.env).toContainEqual({ name: "FRONTEND_HOST", value: "0.0.0.0" });
  });

  test("the ConfigMap holds a mesh.yaml the sidecar loads, with the static upstream mapped to the headless Service", async () => {
    const { out } = await renderHello(["--namespace", "team-a"]);
    const frontend = readManifests(join(out, "frontend.yaml"));
    const [cm] = byKind<ConfigMap>(frontend, "ConfigMap");
    const text = cm!.data!["mesh.yaml"]!;
    const config = parseConfig(text, "/etc/rpal-mesh/config/mesh.yaml");
    expect(config.pods.map((p) => p.name)).toEqual(["frontend"]);
    const pod = config.pods[0]!;
    expect(pod.sidecar.upstreams[0]!.dns).toBe("greeter-headless.team-a.svc.cluster.local:50051");
    expect(pod.sidecar.upstreams[0]!.endpoints).toBeUndefined();
    expect(pod.sidecar.admin).toEqual({ host: "0.0.0.0", port: 9902 });
    expect(pod.sidecar.protos).toEqual(["/app/examples/hello/hello.proto"]);
    expect(pod.app.cwd).toBe("/app/examples/hello");
    expect(frontend.every((o) => o.metadata?.namespace === "team-a")).toBe(true);
    // The sidecar container reads exactly that file.
    const sidecar = podSpec(frontend).initContainers![0]!;
    expect(sidecar.command).toContain("/etc/rpal-mesh/config/mesh.yaml");
    const greeterCm = byKind<ConfigMap>(readManifests(join(out, "greeter.yaml")), "ConfigMap")[0]!;
    expect(parseConfig(greeterCm.data!["mesh.yaml"]!, "/x/mesh.yaml").pods[0]!.sidecar.inbound).toEqual({ host: "0.0.0.0", port: 50051 });
  });

  test("--image and --replicas reach the Deployment", async () => {
    const { out } = await renderHello(["--image", "registry.example.com/team/hello:1.2", "--replicas", "3"]);
    const [dep] = byKind<Deployment>(readManifests(join(out, "greeter.yaml")), "Deployment");
    expect(dep!.spec!.replicas).toBe(3);
    const spec = dep!.spec!.template.spec!;
    expect([spec.initContainers![0]!.image, spec.containers[0]!.image]).toEqual(["registry.example.com/team/hello:1.2", "registry.example.com/team/hello:1.2"]);
  });
});

describe("mesh k8s options and errors", () => {
  function writeMesh(yaml: string): { dir: string; file: string } {
    const dir = res.scratchDir("rpal-mesh-k8s-");
    writeFileSync(join(dir, "a.proto"), 'syntax = "proto3";\npackage a;\n');
    mkdirSync(join(dir, "certs"));
    const file = join(dir, "mesh.yaml");
    writeFileSync(file, yaml);
    return { dir, file };
  }
  const opts = (dir: string, file: string): RenderOptions => ({ image: "x:1", namespace: "default", replicas: 1, context: dir, configFile: file });

  test("transport: rpal adds the RPAL node selector, the marked bun and the note; other pods get neither", () => {
    const { dir, file } = writeMesh(`version: 1
pods:
  - name: fast
    app: { command: bun, args: [app.ts] }
    sidecar: { transport: rpal, inbound: { port: 7000 }, admin: { port: 7001 } }
  - name: plain
    app: { command: bun, args: [app.ts] }
    sidecar: { transport: shm, admin: { port: 7002 } }
`);
    const [fast, plain] = renderAll(loadConfig(file), opts(dir, file));
    const fastDep = fast!.objects.find((o) => o.kind === "Deployment") as Deployment;
    const spec = fastDep.spec!.template.spec!;
    expect(spec.nodeSelector).toEqual({ "rpal-mesh.io/rpal-kernel": "true" });
    expect(spec.initContainers![0]!.command![0]).toBe("/usr/local/bin/bun-rpal");
    expect(spec.containers[0]!.command).toEqual(["/usr/local/bin/bun-rpal"]);
    expect(fast!.text).toContain("The RPAL kernel");
    expect(fast!.text).toContain("node's business");
    const plainDep = plain!.objects.find((o) => o.kind === "Deployment") as Deployment;
    expect(plainDep.spec!.template.spec!.nodeSelector).toBeUndefined();
    expect(plain!.text).not.toContain("RPAL");
  });

  test("tls: the Secret is referenced and mounted, the in-cluster config points at it, and the text says how to create it", () => {
    const { dir, file } = writeMesh(`version: 1
pods:
  - name: secure
    app: { command: bun }
    sidecar:
      inbound: { port: 7000 }
      admin: { port: 0 }
      tls: { ca: certs/ca.pem, cert: certs/secure.pem, key: certs/secure-key.pem }
`);
    const [r] = renderAll(loadConfig(file), opts(dir, file));
    const dep = r!.objects.find((o) => o.kind === "Deployment") as Deployment;
    const spec = dep.spec!.template.spec!;
    expect(spec.volumes!.find((v) => v.name === "mesh-tls")!.secret).toEqual({ secretName: "secure-mesh-tls", defaultMode: 0o400 });
    expect(spec.initContainers![0]!.volumeMounts!.find((m) => m.name === "mesh-tls")).toEqual({ name: "mesh-tls", mountPath: "/etc/rpal-mesh/tls", readOnly: true });
    expect(spec.containers[0]!.volumeMounts!.some((m) => m.name === "mesh-tls")).toBe(false); // keys stay with the sidecar
    const cm = r!.objects.find((o) => o.kind === "ConfigMap") as ConfigMap;
    const inCluster = parseConfig(cm.data!["mesh.yaml"]!, "/etc/rpal-mesh/config/mesh.yaml");
    expect(inCluster.pods[0]!.sidecar.tls).toEqual({ ca: "/etc/rpal-mesh/tls/ca.pem", cert: "/etc/rpal-mesh/tls/cert.pem", key: "/etc/rpal-mesh/tls/key.pem" });
    expect(inCluster.pods[0]!.sidecar.admin.port).toBe(9901); // port 0 → a fixed port the probes can use
    expect(r!.text).toContain("create secret generic secure-mesh-tls");
    const svc = r!.objects.find((o) => o.kind === "Service") as Service;
    expect(svc.spec!.ports![0]!.appProtocol).toBeUndefined(); // not h2c under TLS
  });

  test("a loopback endpoint no pod serves is an error naming the field", () => {
    const { dir, file } = writeMesh(`version: 1
pods:
  - name: lonely
    app: { command: bun }
    sidecar:
      upstreams: [{ service: a.B, endpoints: [127.0.0.1:6000] }]
`);
    expect(() => renderAll(loadConfig(file), opts(dir, file))).toThrow(K8sRenderError);
    expect(() => renderAll(loadConfig(file), opts(dir, file))).toThrow(/pods\[0\]\.sidecar\.upstreams\[0\]\.endpoints: 127\.0\.0\.1:6000.*no pod/);
  });

  test("external endpoints are kept; endpoints spread over two pods become their ClusterIP Services", () => {
    const { dir, file } = writeMesh(`version: 1
pods:
  - name: a
    app: { command: bun }
    sidecar: { inbound: { port: 7000 }, admin: { port: 7100 } }
  - name: b
    app: { command: bun }
    sidecar: { inbound: { port: 7001 }, admin: { port: 7101 } }
  - name: c
    app: { command: bun }
    sidecar:
      admin: { port: 7102 }
      upstreams:
        - { service: a.A, endpoints: [127.0.0.1:7000, localhost:7001] }
        - { service: x.X, endpoints: [10.20.30.40:443] }
        - { service: y.Y, dns: "_grpc._tcp.y.other.svc.cluster.local:1" }
`);
    const rendered = renderAll(loadConfig(file), opts(dir, file));
    const cm = rendered[2]!.objects.find((o) => o.kind === "ConfigMap") as ConfigMap;
    const ups = parseConfig(cm.data!["mesh.yaml"]!, "/m.yaml").pods[0]!.sidecar.upstreams;
    expect(ups[0]!.endpoints).toEqual(["a.default.svc.cluster.local:7000", "b.default.svc.cluster.local:7001"]);
    expect(ups[1]!.endpoints).toEqual(["10.20.30.40:443"]);
    expect(ups[2]!.dns).toBe("_grpc._tcp.y.other.svc.cluster.local:1");
  });

  test("a pod name that cannot name a Service, and a file outside the build context, are errors", () => {
    const bad = writeMesh(`version: 1
pods:
  - name: 9lives
    app: { command: bun }
`);
    expect(() => renderAll(loadConfig(bad.file), opts(bad.dir, bad.file))).toThrow(/"9lives" cannot name a Kubernetes Service.*start with a letter/);
    const { dir, file } = writeMesh(`version: 1
pods:
  - name: p
    app: { command: bun, cwd: .. }
`);
    expect(() => renderAll(loadConfig(file), opts(dir, file))).toThrow(/app\.cwd: .* is outside the image's build context/);
  });

  test("k8sMain: user mistakes exit 2 with one line and write nothing", async () => {
    const out = join(res.scratchDir("rpal-mesh-k8s-"), "out");
    const errors: string[] = [];
    const io = { out: () => {}, err: (l: string) => void errors.push(l) };
    expect(await k8sMain([HELLO, "--out", out, "--image", "bad image"], io)).toBe(2);
    expect(await k8sMain([HELLO, "--out", out, "--namespace", "Team_A"], io)).toBe(2);
    expect(await k8sMain([HELLO, "--out", out, "--replicas", "0"], io)).toBe(2);
    expect(await k8sMain([HELLO, "--out", out, "--frobnicate"], io)).toBe(2);
    expect(await k8sMain(["/nonexistent/mesh.yaml", "--out", out], io)).toBe(2);
    expect(await k8sMain([HELLO, "--out", out, "--context", "/nonexistent-context"], io)).toBe(2);
    const aFile = join(res.scratchDir("rpal-mesh-k8s-"), "file");
    writeFileSync(aFile, "");
    expect(await k8sMain([HELLO, "--out", aFile], io)).toBe(2);
    expect(await k8sMain([HELLO, "--out", join(aFile, "sub")], io)).toBe(2);
    expect(errors.length).toBe(8);
    expect(errors[6]).toMatch(/--out .*EEXIST|cannot write/);
    expect(errors[7]).toContain("--out");
    expect(errors[0]).toContain("--image");
    expect(errors[1]).toContain("--namespace");
    expect(errors[2]).toContain("--replicas");
    expect(errors[3]).toContain("--frobnicate");
    expect(errors[4]).toContain("no such file");
    expect(errors[5]).toContain("outside the image's build context");
    for (const e of errors) expect(e).not.toContain("    at "); // no stack traces for user mistakes
    expect(() => statSync(out)).toThrow();
  });
});
