// Metadata between grpc-js (network side) and the runtime's Metadata (app side). Headers that belong to
// the HTTP/2 and gRPC framing of one hop are dropped: each hop makes its own.
import * as grpc from "@grpc/grpc-js";
import type { Metadata } from "../../runtime/rpc/status.ts";

const HOP_HEADERS = new Set([
  "content-type",
  "te",
  "user-agent",
  "host",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "accept-encoding",
  "content-length",
  "connection",
]);

/** grpc-js metadata → runtime metadata; repeated text values are joined with ", " as HTTP does. */
export function fromGrpcMetadata(md: grpc.Metadata | undefined): Metadata {
  const out: Metadata = {};
  if (!md) return out;
  const map = md.getMap();
  for (const key of Object.keys(map)) {
    if (HOP_HEADERS.has(key) || key.startsWith(":")) continue;
    if (key.endsWith("-bin")) {
      const v = map[key];
      if (v instanceof Buffer || v instanceof Uint8Array) out[key] = new Uint8Array(v);
    } else {
      const all = md.get(key);
      out[key] = all.length === 1 ? String(all[0]) : all.map(String).join(", ");
    }
  }
  return out;
}

/** runtime metadata → grpc-js metadata, skipping what grpc-js would refuse (invalid keys or values). */
export function toGrpcMetadata(md: Metadata | undefined, extra?: Record<string, string>): grpc.Metadata {
  const out = new grpc.Metadata();
  if (md) {
    for (const key of Object.keys(md)) {
      if (HOP_HEADERS.has(key) || key.startsWith(":")) continue;
      const v = md[key]!;
      try {
        if (key.endsWith("-bin")) out.set(key, Buffer.from(typeof v === "string" ? Buffer.from(v) : v));
        else if (typeof v === "string") out.set(key, v);
      } catch {
        // An invalid key or value from the peer is dropped rather than failing the whole call.
      }
    }
  }
  if (extra) for (const key of Object.keys(extra)) out.set(key, extra[key]!);
  return out;
}
