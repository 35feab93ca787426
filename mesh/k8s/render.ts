// mesh.yaml → Kubernetes manifests, one multi-document YAML file per pod. The objects are built with
// kubernetes-models (typed, and validated against the Kubernetes OpenAPI schemas before anything is
// written), then printed with the `yaml` package so comments can say what an operator must provide.
import { createHash } from "node:crypto";
import { relative } from "node:path";
import { Document, isNode, stringify } from "yaml";
import { Deployment } from "kubernetes-models/apps/v1";
import { ConfigMap, Service } from "kubernetes-models/v1";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IContainerPort } from "kubernetes-models/v1/ContainerPort";
import type { IEnvVar } from "kubernetes-models/v1/EnvVar";
import type { IServicePort } from "kubernetes-models/v1/ServicePort";
import type { IVolume } from "kubernetes-models/v1/Volume";
import type { IVolumeMount } from "kubernetes-models/v1/VolumeMount";
import type { MeshConfig, PodConfig } from "../config/index.ts";
import { sidecarProcessEnv } from "../sidecar/process-env.ts";
import {
  APP_SOCKET,
  CONFIG_DIR,
  CONFIG_FILE,
  DEFAULT_ADMIN_PORT,
  IMAGE_ROOT,
  SIDECAR_BUNDLE,
  K8sRenderError,
  RPAL_BUN,
  RPAL_NODE_LABEL,
  SOCKET_DIR,
  TLS_DIR,
  checkPodName,
  configMapName,
  headlessDns,
  headlessName,
  imagePath,
  mapUpstream,
  serviceName,
  tlsSecretName,
} from "./names.ts";

export interface RenderOptions {
  image: string;
  namespace: string;
  replicas: number;
  /** Absolute path of the directory the image is built from (it becomes IMAGE_ROOT). */
  context: string;
  /** Absolute path of the mesh.yaml, for the header comment. */
  configFile: string;
}

export interface RenderedPod {
  pod: string;
  /** File name inside --out. */
  file: string;
  /** The validated objects, in apply order (ConfigMap, Services, Deployment). */
  objects: (ConfigMap | Service | Deployment)[];
  /** The YAML text written to `file`. */
  text: string;
  /** One line per upstream: how its mesh.yaml target was mapped. */
  upstreamNotes: string[];
}

const SIDECAR = "mesh-sidecar";
const APP = "app";
// Uid/gid of the `bun` user in the oven/bun image; both containers must share it so the 0700 socket
// directory and the 0600 shm segments are usable by both and by no one else.
const RUN_AS = 1000;

/** App env vars that name the port the app itself listens on (PORT, FRONTEND_PORT, …). */
const APP_PORT_ENV_RE = /^(?:[A-Z0-9_]*_)?PORT$/;

function labels(pod: string): Record<string, string> {
  return { "app.kubernetes.io/name": pod, "app.kubernetes.io/part-of": "rpal-mesh" };
}

function metadata(name: string, pod: string, namespace: string) {
  return { name, namespace, labels: { ...labels(pod), "app.kubernetes.io/managed-by": "rpal-mesh-k8s" } };
}

function appPorts(pod: PodConfig): IContainerPort[] {
  const ports: IContainerPort[] = [];
  for (const [key, value] of Object.entries(pod.app.env)) {
    if (!APP_PORT_ENV_RE.test(key) || !/^\d{1,5}$/.test(value)) continue;
    const port = Number(value);
    if (port < 1 || port > 65535 || ports.some((p) => p.containerPort === port)) continue;
    ports.push({ name: ports.length === 0 ? "http" : `http-${ports.length + 1}`, containerPort: port, protocol: "TCP" });
  }
  return ports;
}

/**
 * For each app port variable (X_PORT, PORT) without its X_HOST (HOST) twin: X_HOST=0.0.0.0. On one
 * machine apps listen on loopback; in a pod the Service reaches them on the pod IP.
 */
function appHostEnv(pod: PodConfig): IEnvVar[] {
  const out: IEnvVar[] = [];
  for (const [key, value] of Object.entries(pod.app.env)) {
    if (!APP_PORT_ENV_RE.test(key) || !/^\d{1,5}$/.test(value)) continue;
    const hostKey = `${key.slice(0, -"PORT".length)}HOST`;
    if (!(hostKey in pod.app.env) && !out.some((e) => e.name === hostKey)) out.push({ name: hostKey, value: "0.0.0.0" });
  }
  return out;
}

function adminPort(pod: PodConfig): number {
  if (pod.sidecar.admin.port !== 0) return pod.sidecar.admin.port;
  return pod.sidecar.inbound?.port === DEFAULT_ADMIN_PORT ? DEFAULT_ADMIN_PORT + 1 : DEFAULT_ADMIN_PORT;
}

/** The mesh.yaml the sidecar reads in the cluster: this pod only, listening on the pod IP, paths in the image. */
export function inClusterConfig(config: MeshConfig, pod: PodConfig, index: number, opts: RenderOptions): { yaml: string; notes: string[] } {
  const where = `pods[${index}]`;
  const notes: string[] = [];
  const sidecar = pod.sidecar;
  const upstreams = sidecar.upstreams.map((u, i) => {
    const target = mapUpstream(u, `${where}.sidecar.upstreams[${i}]`, config, opts.namespace);
    notes.push(`${pod.name}: ${u.service}: ${target.note} → ${"dns" in target ? `dns: ${target.dns}` : `endpoints: [${target.endpoints.join(", ")}]`}`);
    const { service, endpoints: _e, dns: _d, ...rest } = u;
    return "dns" in target ? { service, dns: target.dns, ...rest } : { service, endpoints: target.endpoints, ...rest };
  });
  const out = {
    version: 1,
    pods: [
      {
        name: pod.name,
        app: { ...pod.app, cwd: imagePath(pod.app.cwd, opts.context, `${where}.app.cwd`) },
        sidecar: {
          ...sidecar,
          // Probes and peers reach the sidecar on the pod IP; the pod's network namespace is its own.
          ...(sidecar.inbound ? { inbound: { host: "0.0.0.0", port: sidecar.inbound.port } } : {}),
          admin: { host: "0.0.0.0", port: adminPort(pod) },
          protos: sidecar.protos.map((p, i) => imagePath(p, opts.context, `${where}.sidecar.protos[${i}]`)),
          ...(sidecar.tls ? { tls: { ca: `${TLS_DIR}/ca.pem`, cert: `${TLS_DIR}/cert.pem`, key: `${TLS_DIR}/key.pem` } } : {}),
          upstreams,
        },
      },
    ],
  };
  const header = `# mesh.yaml for pod ${pod.name} inside the cluster, rendered by mesh k8s from ${displayPath(opts.configFile)}\n`;
  return { yaml: header + stringify(out, { lineWidth: 0 }), notes };
}

function displayPath(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel && !rel.startsWith("..") ? rel : p;
}

// The shm transport maps a memfd the sidecar passes over the control socket, which crosses container
// boundaries without /dev/shm; the memory-backed /dev/shm is there for shared-memory users that go
// through the file system, and replaces the container runtime's small default (64 MiB in Docker).
function shmSizeLimit(pod: PodConfig): string {
  // Two rings per session and a few sessions (reconnects overlap the old one briefly), with headroom.
  const mib = Math.max(64, Math.ceil((pod.sidecar.shm.ring_bytes * 2 * 4) / (1024 * 1024)));
  return `${mib}Mi`;
}

function renderDeployment(pod: PodConfig, opts: RenderOptions, configHash: string, appCwd: string): Deployment {
  const s = pod.sidecar;
  const rpal = s.transport === "rpal";
  const admin = adminPort(pod);
  const drain = s.drain_seconds;
  const mounts: IVolumeMount[] = [
    { name: "mesh-socket", mountPath: SOCKET_DIR },
    { name: "dshm", mountPath: "/dev/shm" },
  ];
  const volumes: IVolume[] = [
    { name: "mesh-socket", emptyDir: {} },
    { name: "dshm", emptyDir: { medium: "Memory", sizeLimit: shmSizeLimit(pod) } },
    { name: "mesh-config", configMap: { name: configMapName(pod.name), defaultMode: 0o444 } },
  ];
  const sidecarMounts: IVolumeMount[] = [...mounts, { name: "mesh-config", mountPath: CONFIG_DIR, readOnly: true }];
  if (s.tls) {
    volumes.push({ name: "mesh-tls", secret: { secretName: tlsSecretName(pod.name), defaultMode: 0o400 } });
    sidecarMounts.push({ name: "mesh-tls", mountPath: TLS_DIR, readOnly: true });
  }
  const hardening = { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } };
  const sidecarPorts: IContainerPort[] = [];
  if (s.inbound) sidecarPorts.push({ name: "grpc", containerPort: s.inbound.port, protocol: "TCP" });
  sidecarPorts.push({ name: "admin", containerPort: admin, protocol: "TCP" });
  const bun = rpal ? RPAL_BUN : "bun";

  const sidecar: IContainer = {
    name: SIDECAR,
    image: opts.image,
    imagePullPolicy: "IfNotPresent",
    // A native sidecar: an init container that keeps running, started before the app and stopped after it.
    restartPolicy: "Always",
    // The pre-built bundle, as `mesh up` runs sidecars (~3 MB less RSS than from source: no transpiler and
    // module loader left resident); the Dockerfile builds it.
    command: [bun, SIDECAR_BUNDLE, "--config", CONFIG_FILE, "--pod", pod.name, "--app-socket", APP_SOCKET],
    // The same runtime settings `mesh up` gives its sidecars (process-env.ts), so a pod measures as bench-mesh does.
    env: [{ name: "MESH_LOG_FORMAT", value: "json" }, ...Object.entries(sidecarProcessEnv({})).map(([name, value]) => ({ name, value }))],
    ports: sidecarPorts,
    // The app starts once /healthz answers (the app socket is listening), as `mesh up` waits for "ready".
    startupProbe: { httpGet: { path: "/healthz", port: "admin" }, periodSeconds: 1, failureThreshold: 30 },
    readinessProbe: { httpGet: { path: "/readyz", port: "admin" }, periodSeconds: 5, failureThreshold: 2 },
    livenessProbe: { httpGet: { path: "/healthz", port: "admin" }, periodSeconds: 10, failureThreshold: 3 },
    resources: { requests: { cpu: "50m", memory: "64Mi" } },
    volumeMounts: sidecarMounts,
    securityContext: hardening,
  };

  const appEnv: IEnvVar[] = [
    ...Object.entries(pod.app.env).map(([name, value]) => ({ name, value })),
    ...appHostEnv(pod),
    { name: "MESH_SOCKET", value: APP_SOCKET },
    { name: "MESH_TRANSPORT", value: s.transport },
    { name: "MESH_POD", value: pod.name },
  ];
  const ports = appPorts(pod);
  const app: IContainer = {
    name: APP,
    image: opts.image,
    imagePullPolicy: "IfNotPresent",
    command: [pod.app.command === "bun" ? bun : pod.app.command],
    args: pod.app.args,
    workingDir: appCwd,
    env: appEnv,
    ...(ports.length ? { ports } : {}),
    // Keep serving while Kubernetes takes the pod out of its Services and peers re-resolve DNS; then the
    // app stops, and the sidecar gets SIGTERM last and drains what is still in flight.
    ...(drain > 0 ? { lifecycle: { preStop: { sleep: { seconds: Math.ceil(drain) } } } } : {}),
    resources: { requests: { cpu: "100m", memory: "128Mi" } },
    volumeMounts: mounts,
    securityContext: hardening,
  };

  return new Deployment({
    metadata: metadata(pod.name, pod.name, opts.namespace),
    spec: {
      replicas: opts.replicas,
      selector: { matchLabels: labels(pod.name) },
      template: {
        metadata: {
          labels: labels(pod.name),
          annotations: {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": String(admin),
            "prometheus.io/path": "/metrics",
            // Changes with the ConfigMap, so `kubectl apply` rolls the pods onto a new mesh.yaml.
            "rpal-mesh.io/config-sha256": configHash,
          },
        },
        spec: {
          // preStop sleep (drain) + the sidecar's own drain + slack for process exit.
          terminationGracePeriodSeconds: Math.ceil(drain) * 2 + 5,
          // The shm transport's app opens the sidecar's memfd segment through /proc/<sidecar-pid>/fd:
          // the two containers must see each other's processes (they already share the IPC namespace).
          shareProcessNamespace: true,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: RUN_AS,
            runAsGroup: RUN_AS,
            fsGroup: RUN_AS,
            seccompProfile: { type: "RuntimeDefault" },
          },
          initContainers: [sidecar],
          containers: [app],
          volumes,
          ...(rpal ? { nodeSelector: { [RPAL_NODE_LABEL]: "true" } } : {}),
        },
      },
    },
  });
}

function renderServices(pod: PodConfig, opts: RenderOptions): Service[] {
  const s = pod.sidecar;
  const grpc: IServicePort | undefined = s.inbound
    ? { name: "grpc", port: s.inbound.port, targetPort: "grpc", protocol: "TCP", ...(s.tls ? {} : { appProtocol: "kubernetes.io/h2c" }) }
    : undefined;
  const http = appPorts(pod).map((p): IServicePort => ({ name: p.name!, port: p.containerPort, targetPort: p.name!, protocol: "TCP" }));
  const ports: IServicePort[] = [...(grpc ? [grpc] : []), ...http, { name: "admin", port: adminPort(pod), targetPort: "admin", protocol: "TCP" }];
  const services = [
    new Service({
      metadata: metadata(serviceName(pod.name), pod.name, opts.namespace),
      spec: { type: "ClusterIP", selector: labels(pod.name), ports },
    }),
  ];
  if (grpc) {
    services.push(
      new Service({
        metadata: metadata(headlessName(pod.name), pod.name, opts.namespace),
        // No cluster IP: DNS answers with the ready pods' IPs (A) and _grpc._tcp SRV records, which
        // the sidecars of other pods resolve and balance over themselves.
        spec: { clusterIP: "None", selector: labels(pod.name), ports: [grpc] },
      }),
    );
  }
  return services;
}

function validate(obj: ConfigMap | Service | Deployment): void {
  try {
    obj.validate();
  } catch (e) {
    throw new K8sRenderError(`rendered ${obj.kind} ${obj.metadata?.name} does not match the Kubernetes schema (a bug in mesh k8s): ${(e as Error).message}`);
  }
}

function toYaml(obj: ConfigMap | Service | Deployment, comment?: string, nodeComments: [path: (string | number)[], text: string][] = []): string {
  const doc = new Document(obj.toJSON());
  if (comment) doc.commentBefore = comment;
  for (const [path, text] of nodeComments) {
    const node = doc.getIn(path, true);
    if (isNode(node)) node.commentBefore = text;
  }
  return doc.toString({ lineWidth: 0 });
}

export function renderPod(config: MeshConfig, index: number, opts: RenderOptions): RenderedPod {
  const pod = config.pods[index]!;
  checkPodName(pod, index);
  const appCwd = imagePath(pod.app.cwd, opts.context, `pods[${index}].app.cwd`);
  const { yaml: meshYaml, notes } = inClusterConfig(config, pod, index, opts);
  const configHash = createHash("sha256").update(meshYaml).digest("hex").slice(0, 16);
  const configMap = new ConfigMap({
    metadata: metadata(configMapName(pod.name), pod.name, opts.namespace),
    data: { "mesh.yaml": meshYaml },
  });
  const services = renderServices(pod, opts);
  const deployment = renderDeployment(pod, opts, configHash, appCwd);
  const objects = [configMap, ...services, deployment];
  for (const o of objects) validate(o);

  const s = pod.sidecar;
  const header = [
    ` Generated by \`bun run mesh k8s\` from ${displayPath(opts.configFile)} — regenerate rather than edit.`,
    ` Pod "${pod.name}": ConfigMap ${configMapName(pod.name)}, Service ${serviceName(pod.name)}${s.inbound ? `, headless Service ${headlessName(pod.name)}` : ""}, Deployment ${pod.name}.`,
    ` Needs Kubernetes >= 1.30 (native sidecar containers; preStop sleep). Apply: kubectl apply -f ${pod.name}.yaml`,
  ];
  if (s.tls) {
    const rel = (p: string) => displayPath(p);
    header.push(
      ` mTLS: the Secret ${tlsSecretName(pod.name)} is referenced, not rendered (keys do not belong in manifests). Create it first:`,
      `   kubectl -n ${opts.namespace} create secret generic ${tlsSecretName(pod.name)} --from-file=ca.pem=${rel(s.tls.ca)} --from-file=cert.pem=${rel(s.tls.cert)} --from-file=key.pem=${rel(s.tls.key)}`,
    );
  }
  const deploymentComments: [(string | number)[], string][] = [];
  if (s.transport === "rpal") {
    deploymentComments.push([
      ["spec", "template", "spec", "nodeSelector"],
      ` transport: rpal was asked for explicitly, so this pod only runs on nodes labelled ${RPAL_NODE_LABEL}=true.\n` +
        ` The RPAL kernel (the RPAL patch series, PKU + FSGSBASE CPU) is the node's business: the operator boots it\n` +
        ` and labels the node; mesh k8s does not install or check it.`,
    ]);
  }
  const docs = [
    toYaml(configMap, header.join("\n")),
    ...services.map((svc) => toYaml(svc)),
    toYaml(deployment, undefined, deploymentComments),
  ];
  return { pod: pod.name, file: `${pod.name}.yaml`, objects, text: docs.join("---\n"), upstreamNotes: notes };
}

export function renderAll(config: MeshConfig, opts: RenderOptions): RenderedPod[] {
  return config.pods.map((_, i) => renderPod(config, i, opts));
}
