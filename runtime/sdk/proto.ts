// Service definitions from .proto files (protobufjs), turned into what the SDK needs: per method, the
// path, the streaming shape and the request/response codecs. Loaded once per file and cached.
import protobuf from "protobufjs";
import { resolve } from "node:path";
import { RpcError, Status } from "../rpc/status.ts";
import type { CallShape } from "../rpc/types.ts";

export interface MethodDef {
  /** "/pkg.Service/Method" */
  path: string;
  name: string;
  shape: CallShape;
  encodeRequest(value: unknown): Uint8Array;
  decodeRequest(bytes: Uint8Array): Record<string, unknown>;
  encodeResponse(value: unknown): Uint8Array;
  decodeResponse(bytes: Uint8Array): Record<string, unknown>;
}

export interface ServiceDef {
  name: string;
  methods: MethodDef[];
}

const roots = new Map<string, protobuf.Root>();

function loadRoot(files: string[]): protobuf.Root {
  const key = files.map((f) => resolve(f)).join("\0");
  let root = roots.get(key);
  if (!root) {
    try {
      root = protobuf.loadSync(files.map((f) => resolve(f)));
      root.resolveAll();
    } catch (e) {
      throw new Error(`cannot load ${files.join(", ")}: ${(e as Error).message}`, { cause: e });
    }
    roots.set(key, root);
  }
  return root;
}

const TO_OBJECT: protobuf.IConversionOptions = { defaults: true, longs: String, enums: String, arrays: true, objects: true };

function codec(type: protobuf.Type, what: string) {
  return {
    encode(value: unknown): Uint8Array {
      if (value instanceof Uint8Array) return value; // already encoded: pass through
      try {
        const msg = value instanceof protobuf.Message ? value : type.fromObject((value ?? {}) as Record<string, unknown>);
        return type.encode(msg).finish();
      } catch (e) {
        throw new RpcError(Status.INVALID_ARGUMENT, `cannot encode ${what} as ${type.fullName}: ${(e as Error).message}`);
      }
    },
    decode(bytes: Uint8Array): Record<string, unknown> {
      try {
        return type.toObject(type.decode(bytes), TO_OBJECT);
      } catch (e) {
        throw new RpcError(Status.INVALID_ARGUMENT, `malformed ${what} (${bytes.byteLength} bytes) for ${type.fullName}: ${(e as Error).message}`);
      }
    },
  };
}

/** Loads `serviceName` ("pkg.Service") from one or more .proto files. Throws naming what is missing. */
export function loadService(protoFiles: string | string[], serviceName: string): ServiceDef {
  const files = Array.isArray(protoFiles) ? protoFiles : [protoFiles];
  const root = loadRoot(files);
  let service: protobuf.Service;
  try {
    service = root.lookupService(serviceName);
  } catch {
    const known: string[] = [];
    const walk = (ns: protobuf.NamespaceBase) => {
      for (const o of ns.nestedArray) {
        if (o instanceof protobuf.Service) known.push(o.fullName.replace(/^\./, ""));
        else if (o instanceof protobuf.Namespace) walk(o);
      }
    };
    walk(root);
    throw new Error(`service ${serviceName} is not defined in ${files.join(", ")} (defined: ${known.join(", ") || "none"})`);
  }
  const fullName = service.fullName.replace(/^\./, "");
  return {
    name: fullName,
    methods: service.methodsArray.map((m) => {
      m.resolve();
      const req = codec(m.resolvedRequestType!, `request of ${m.name}`);
      const res = codec(m.resolvedResponseType!, `response of ${m.name}`);
      return {
        path: `/${fullName}/${m.name}`,
        name: m.name,
        shape: { serverStreaming: !!m.responseStream, clientStreaming: !!m.requestStream },
        encodeRequest: req.encode,
        decodeRequest: req.decode,
        encodeResponse: res.encode,
        decodeResponse: res.decode,
      };
    }),
  };
}

export function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}
