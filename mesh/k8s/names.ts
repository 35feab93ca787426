// How mesh.yaml names become Kubernetes names, and where things live inside the pod and the image.
// One place, because the manifests, the in-cluster mesh.yaml and the README must agree on them.
import { isAbsolute, posix, relative } from "node:path";
import type { MeshConfig, PodConfig, UpstreamConfig } from "../config/index.ts";

export class K8sRenderError extends Error {
  override name = "K8sRenderError";
}

/** Where the Dockerfile puts the project (its build context). */
export const IMAGE_ROOT = "/app";
/** The sidecar as the image's Dockerfile pre-builds it (mesh/sidecar/bundle.ts), as `mesh up` runs it. */
export const SIDECAR_BUNDLE_DIR = `${IMAGE_ROOT}/.sidecar-bundle`;
export const SIDECAR_BUNDLE = `${SIDECAR_BUNDLE_DIR}/sidecar.js`;
/** The emptyDir both containers mount; the control socket lives in it. */
export const SOCKET_DIR = "/var/run/rpal-mesh";
// In a subdirectory the sidecar creates 0700 for itself: the emptyDir's own root is 0777 (or group-
// writable under fsGroup), where anyone in the pod could unlink or replace the socket.
export const APP_SOCKET = `${SOCKET_DIR}/sock/app.sock`;
export const CONFIG_DIR = "/etc/rpal-mesh/config";
export const CONFIG_FILE = `${CONFIG_DIR}/mesh.yaml`;
export const TLS_DIR = "/etc/rpal-mesh/tls";
/** The marked copy of bun the Dockerfile makes for RPAL (bytes "RPAL" at ELF offset 12, see RPAL.md). */
export const RPAL_BUN = "/usr/local/bin/bun-rpal";
/** Node label an operator puts on nodes that boot an RPAL kernel. */
export const RPAL_NODE_LABEL = "rpal-mesh.io/rpal-kernel";
/** Admin port used in the cluster when mesh.yaml asks for port 0: probes need a fixed one. */
export const DEFAULT_ADMIN_PORT = 9901;

// Service names are DNS-1035 labels (start with a letter, at most 63); "-headless" takes 9 of them.
const SERVICE_NAME_RE = /^[a-z]([-a-z0-9]{0,52}[a-z0-9])?$/;

export function checkPodName(pod: PodConfig, index: number): void {
  if (!SERVICE_NAME_RE.test(pod.name)) {
    throw new K8sRenderError(
      `pods[${index}].name: "${pod.name}" cannot name a Kubernetes Service — it must start with a letter, end with a letter or digit and be at most 54 characters (so "${pod.name}-headless" fits in 63); rename the pod`,
    );
  }
}

export const serviceName = (pod: string) => pod;
export const headlessName = (pod: string) => `${pod}-headless`;
export const configMapName = (pod: string) => `${pod}-mesh`;
export const tlsSecretName = (pod: string) => `${pod}-mesh-tls`;

/** The in-cluster DNS name of a pod's headless Service: its A records are the ready pods' IPs. */
export function headlessDns(pod: string, namespace: string): string {
  return `${headlessName(pod)}.${namespace}.svc.cluster.local`;
}

export function clusterIpDns(pod: string, namespace: string): string {
  return `${serviceName(pod)}.${namespace}.svc.cluster.local`;
}

/** An absolute path on this machine → the same file inside the image, or a clear error. */
export function imagePath(abs: string, context: string, what: string): string {
  const rel = relative(context, abs);
  if (rel.startsWith("..") || isAbsolute(rel)) {
    throw new K8sRenderError(
      `${what}: ${abs} is outside the image's build context ${context} — run mesh k8s from the directory the Dockerfile copies (the project root), or pass --context DIR`,
    );
  }
  return rel === "" ? IMAGE_ROOT : posix.join(IMAGE_ROOT, ...rel.split(/[\\/]/));
}

const LOOPBACK_RE = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|0\.0\.0\.0|\[::\])$/;

function splitEndpoint(ep: string): { host: string; port: number } {
  const i = ep.lastIndexOf(":");
  return { host: ep.slice(0, i), port: Number(ep.slice(i + 1)) };
}

export type UpstreamTarget = { dns: string; note: string } | { endpoints: string[]; note: string };

/**
 * Static endpoints in mesh.yaml name sidecars on one machine. In the cluster:
 * - loopback endpoints whose port is one pod's inbound port → that pod's headless Service
 *   (`dns: <pod>-headless.<ns>.svc.cluster.local:<port>`), so the sidecar balances over the pod IPs
 *   itself and its outlier detection sees each replica;
 * - loopback endpoints spread over several pods → those pods' ClusterIP Service names as endpoints;
 * - any other endpoint (an address outside the mesh) → kept as written.
 */
export function mapUpstream(u: UpstreamConfig, where: string, config: MeshConfig, namespace: string): UpstreamTarget {
  if (u.dns) return { dns: u.dns, note: "dns kept as written" };
  const endpoints = u.endpoints ?? [];
  const pods = new Set<string>();
  const external: string[] = [];
  let port = 0;
  for (const ep of endpoints) {
    const { host, port: p } = splitEndpoint(ep);
    if (!LOOPBACK_RE.test(host)) {
      external.push(ep);
      continue;
    }
    const pod = config.pods.find((x) => x.sidecar.inbound?.port === p);
    if (!pod) {
      throw new K8sRenderError(
        `${where}.endpoints: ${ep} is a loopback address but no pod in mesh.yaml has inbound port ${p} — in a cluster it would point at the pod itself; point it at a pod's inbound port or use dns: <service>.<namespace>.svc.cluster.local:<port>`,
      );
    }
    pods.add(pod.name);
    port = p;
  }
  if (pods.size === 1 && external.length === 0) {
    const [pod] = [...pods] as [string];
    return { dns: `${headlessDns(pod, namespace)}:${port}`, note: `endpoints ${endpoints.join(", ")} → pod ${pod}'s headless Service` };
  }
  const mapped = [...pods].map((pod) => {
    const p = config.pods.find((x) => x.name === pod)!.sidecar.inbound!.port;
    return `${clusterIpDns(pod, namespace)}:${p}`;
  });
  return { endpoints: [...mapped, ...external], note: pods.size > 1 ? "several pods: their ClusterIP Services" : "external endpoints kept as written" };
}
