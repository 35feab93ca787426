// Method paths and streaming shapes from the pod's .proto files, parsed with protobufjs. The sidecar
// needs nothing else from them: payloads pass through as bytes, never decoded. (Imports resolve
// against the proto's own directory and mesh.yaml's, as @grpc/proto-loader's includeDirs did.)
import { accessSync, constants } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import protobuf from "protobufjs";
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

function loadRoot(file: string, includeDirs: string[]): protobuf.Root {
  const root = new protobuf.Root();
  const original = root.resolvePath.bind(root);
  root.resolvePath = (origin, target) => {
    if (isAbsolute(target)) return target;
    for (const dir of includeDirs) {
      const full = join(dir, target);
      try {
        accessSync(full, constants.R_OK);
        return full;
      } catch {
        // not in this directory
      }
    }
    return original(origin, target);
  };
  root.loadSync(file, { keepCase: true });
  root.resolveAll();
  return root;
}

function collect(ns: protobuf.NamespaceBase, methods: Map<string, MethodInfo>): void {
  for (const obj of ns.nestedArray) {
    if (obj instanceof protobuf.Service) {
      const service = obj.fullName.replace(/^\./, "");
      for (const m of obj.methodsArray) {
        const path = `/${service}/${m.name}`;
        if (methods.has(path)) continue;
        methods.set(path, { service, name: m.name, path, shape: { clientStreaming: !!m.requestStream, serverStreaming: !!m.responseStream } });
      }
    }
    if (obj instanceof protobuf.Namespace) collect(obj, methods);
  }
}

/** Loads every proto (paths relative to `baseDir`) and returns its methods by path. */
export function loadMethods(protoPaths: readonly string[], baseDir: string): Map<string, MethodInfo> {
  const methods = new Map<string, MethodInfo>();
  for (const p of protoPaths) {
    const file = resolve(baseDir, p);
    let root: protobuf.Root;
    try {
      root = loadRoot(file, [dirname(file), baseDir]);
    } catch (e) {
      throw new ProtoError(`cannot load proto ${file} (from sidecar.protos): ${(e as Error).message}`);
    }
    collect(root, methods);
  }
  return methods;
}
