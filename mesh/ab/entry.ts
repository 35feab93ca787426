// Where `mesh ab`'s load enters the mesh: gRPC into a pod's sidecar inbound (default), or HTTP GET at
// an app's own port (--http-get). Resolved once against the user's mesh.yaml, then per transport
// instance, whose ports differ.
import type { MeshConfig } from "../config/index.ts";
import type { GrpcTarget, HttpTarget } from "./drivers.ts";
import { AbUsageError, type AbOptions } from "./flags.ts";
import type { MeshInstance } from "./instance.ts";
import { encodePayloadRequest, findUnaryMethod } from "./request.ts";

const PORT_ENV_RE = /^(?:.*_)?PORT$/;

export interface Entry {
  pod: string;
  describe: string;
  method: string;
  /** The target of one run, for an instance and a payload size. */
  targetFor(inst: MeshInstance, payloadBytes: number): GrpcTarget | HttpTarget;
}

export function grpcEntry(o: AbOptions, config: MeshConfig): Entry {
  const pod = o.targetPod ? config.pods.find((p) => p.name === o.targetPod) : config.pods.find((p) => p.sidecar.inbound);
  if (!pod) {
    throw new AbUsageError(
      o.targetPod
        ? `--target ${o.targetPod}: no such pod in ${o.configPath} (pods: ${config.pods.map((p) => p.name).join(", ")})`
        : `no pod in ${o.configPath} has a sidecar inbound to send gRPC load to — add inbound: to one, or use --http-get`,
    );
  }
  if (!pod.sidecar.inbound) throw new AbUsageError(`--target ${pod.name} has no sidecar inbound in ${o.configPath}: it cannot receive gRPC load`);
  let method: ReturnType<typeof findUnaryMethod>;
  try {
    method = findUnaryMethod(pod.sidecar.protos, o.method);
  } catch (e) {
    throw new AbUsageError((e as Error).message);
  }
  const requests = new Map<number, string>();
  for (const n of o.payloadBytes) {
    try {
      requests.set(n, Buffer.from(encodePayloadRequest(method, n)).toString("base64"));
    } catch (e) {
      throw new AbUsageError((e as Error).message);
    }
  }
  const tls = pod.sidecar.tls;
  return {
    pod: pod.name,
    method: method.path,
    describe: `gRPC ${method.path} into pod ${pod.name}'s sidecar inbound (one app↔sidecar hop, sidecar → app)`,
    targetFor(inst, payloadBytes) {
      const address = inst.pods.find((p) => p.pod === pod.name)?.inbound;
      if (!address) throw new Error(`pod ${pod.name} of transport ${inst.transport} reported no inbound address`);
      return {
        kind: "grpc",
        target: address,
        method: method.path,
        requestBase64: requests.get(payloadBytes)!,
        connections: o.connections,
        ...(tls ? { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } } : {}),
      };
    },
  };
}

export function httpEntry(o: AbOptions, config: MeshConfig): Entry {
  const template = o.httpGet!;
  const port = new URL(template.replace("{payload}", "P")).port;
  let owner: { pod: string; env: string } | undefined;
  for (const p of config.pods) {
    for (const [k, v] of Object.entries(p.app.env)) if (PORT_ENV_RE.test(k) && v === port) owner ??= { pod: p.name, env: k };
  }
  if (!owner) {
    throw new AbUsageError(
      `--http-get port ${port} is not an app port in ${o.configPath}: the harness runs every transport on fresh ports, so it must find ${port} as an app env PORT or *_PORT value (like FRONTEND_PORT: 8080) to know where each copy listens`,
    );
  }
  const found = owner;
  return {
    pod: found.pod,
    method: `GET ${new URL(template.replace("{payload}", "P")).pathname}`,
    describe: `HTTP GET at pod ${found.pod}'s app (${found.env}); the full path crosses app↔sidecar both ways`,
    targetFor(inst, payloadBytes) {
      const p = inst.config.pods.find((x) => x.name === found.pod)!;
      const newPort = p.app.env[found.env]!;
      const url = new URL(template.replace("{payload}", "x".repeat(payloadBytes)));
      url.port = newPort;
      return { kind: "http", url: url.toString() };
    },
  };
}
