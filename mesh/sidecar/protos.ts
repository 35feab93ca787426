// Method paths and streaming shapes from the pod's .proto files. The sidecar needs nothing else from
// them: payloads pass through as bytes (identity serializers), never decoded.
import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { dirname, resolve } from "node:path";
import type { CallShape } from "../../runtime/rpc/types.ts";

export interface MethodInfo {
  /** "pkg.Service" */
  service: string;
  /** "Method" as written in the proto. */
  name: string;
  /** "/pkg.Service/Method" */
  path: string;
  shape: CallShape;
}

export class ProtoError extends Error {
  override name = "ProtoError";
}

const passThrough = (b: Buffer): Buffer => b;

/** Loads every proto (paths relative to `baseDir`) and returns its methods by path. */
export function loadMethods(protoPaths: readonly string[], baseDir: string): Map<string, MethodInfo> {
  const methods = new Map<string, MethodInfo>();
  for (const p of protoPaths) {
    const file = resolve(baseDir, p);
    let pkg: ReturnType<typeof loadSync>;
    try {
      pkg = loadSync(file, { includeDirs: [dirname(file), baseDir], keepCase: true });
    } catch (e) {
      throw new ProtoError(`cannot load proto ${file} (from sidecar.protos): ${(e as Error).message}`);
    }
    for (const [service, def] of Object.entries(pkg)) {
      if (!def || typeof def !== "object" || "format" in def) continue; // messages and enums
      for (const m of Object.values(def as grpc.ServiceDefinition)) {
        const path = (m as grpc.MethodDefinition<unknown, unknown>).path;
        // proto-loader lists a method under its proto name and its camelCase alias: keep one.
        if (typeof path !== "string" || methods.has(path)) continue;
        methods.set(path, {
          service,
          name: path.slice(path.lastIndexOf("/") + 1),
          path,
          shape: { clientStreaming: m.requestStream, serverStreaming: m.responseStream },
        });
      }
    }
  }
  return methods;
}

/** grpc-js service definitions (one per service) whose serializers hand bytes through untouched. */
export function passThroughServices(methods: Map<string, MethodInfo>): Map<string, grpc.ServiceDefinition> {
  const services = new Map<string, grpc.ServiceDefinition>();
  for (const m of methods.values()) {
    let def = services.get(m.service) as Record<string, grpc.MethodDefinition<Buffer, Buffer>> | undefined;
    if (!def) services.set(m.service, (def = {}));
    def[m.name] = {
      path: m.path,
      requestStream: m.shape.clientStreaming,
      responseStream: m.shape.serverStreaming,
      requestSerialize: passThrough,
      requestDeserialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
    };
  }
  return services;
}
