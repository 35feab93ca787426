// Builds the one request message every gRPC call of a run sends: the method's request type with its
// first string (or bytes) field filled with `payloadBytes` bytes — hello.Greeter/SayHello's `name`.
// Encoded once per run with protobufjs, so the load generator never encodes per call.
import protobuf from "protobufjs";

export interface UnaryMethod {
  /** "/pkg.Service/Method" */
  path: string;
  requestType: protobuf.Type;
}

function collectServices(ns: protobuf.NamespaceBase, out: protobuf.Service[]): void {
  for (const o of ns.nestedArray) {
    if (o instanceof protobuf.Service) out.push(o);
    else if (o instanceof protobuf.Namespace) collectServices(o, out);
  }
}

/**
 * The unary method `wanted` ("/pkg.Service/Method"), or the first unary method of the first service in
 * `protoFiles` when none is asked for. Throws naming what exists.
 */
export function findUnaryMethod(protoFiles: string[], wanted?: string): UnaryMethod {
  if (protoFiles.length === 0) throw new Error("the target pod lists no protos in mesh.yaml (sidecar.protos), so there is no method to call — add them or pass --http-get");
  let root: protobuf.Root;
  try {
    root = protobuf.loadSync(protoFiles);
    root.resolveAll();
  } catch (e) {
    throw new Error(`cannot load ${protoFiles.join(", ")}: ${(e as Error).message}`);
  }
  const services: protobuf.Service[] = [];
  collectServices(root, services);
  const unary: UnaryMethod[] = [];
  for (const s of services) {
    for (const m of s.methodsArray) {
      if (m.requestStream || m.responseStream) continue;
      m.resolve();
      unary.push({ path: `/${s.fullName.replace(/^\./, "")}/${m.name}`, requestType: m.resolvedRequestType! });
    }
  }
  const found = wanted ? unary.find((u) => u.path === wanted) : unary[0];
  if (!found) {
    const list = unary.map((u) => u.path).join(", ") || "none";
    throw new Error(wanted ? `--method ${wanted} is not a unary method of ${protoFiles.join(", ")} (unary methods: ${list})` : `${protoFiles.join(", ")} define no unary method to call (found: ${list})`);
  }
  return found;
}

/** Encodes the request with its first string/bytes field set to `payloadBytes` bytes of 'x'. */
export function encodePayloadRequest(method: UnaryMethod, payloadBytes: number): Uint8Array {
  const field = method.requestType.fieldsArray.find((f) => !f.repeated && (f.type === "string" || f.type === "bytes"));
  if (!field) {
    throw new Error(`${method.requestType.fullName} (request of ${method.path}) has no string or bytes field to carry the payload — pick another --method`);
  }
  const value = field.type === "string" ? "x".repeat(payloadBytes) : new Uint8Array(payloadBytes).fill(0x78);
  return method.requestType.encode(method.requestType.fromObject({ [field.name]: value })).finish();
}
