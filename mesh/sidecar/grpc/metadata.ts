// Custom metadata ↔ HTTP/2 headers (PROTOCOL-HTTP2.md, "Custom-Metadata"). Keys are lower case;
// "-bin" keys carry bytes as base64 (we send it padded, accept padded and unpadded); other values are
// printable ASCII. Headers that belong to one hop's HTTP/2 and gRPC framing (pseudo-headers,
// content-type, te, grpc-timeout, grpc-status, ...) are never metadata: each hop makes its own.
// `grpc-status-details-bin` (the rich error model, a serialized google.rpc.Status) is not one of them:
// like grpc-go and grpc-js, it travels as a binary trailer, so the details an app or a remote server
// attach reach the caller through every hop.
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";
import { type Metadata, Status } from "../../../runtime/rpc/status.ts";
import { GrpcError } from "./errors.ts";

export const RESERVED_HEADERS: ReadonlySet<string> = new Set([
  "content-type",
  "te",
  "user-agent",
  "host",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "grpc-status",
  "grpc-message",
  "accept-encoding",
  "content-length",
  "connection",
  "date",
]);

export function isReserved(key: string): boolean {
  return key.charCodeAt(0) === 0x3a /* ":" */ || RESERVED_HEADERS.has(key);
}

function isBinKey(key: string): boolean {
  return key.length > 4 && key.endsWith("-bin");
}

/** base64 character class (standard alphabet): A-Z a-z 0-9 + / */
function isB64(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47;
}

/** Decodes one base64 value, padded or not; undefined if it is not valid base64. */
export function decodeBase64Strict(value: string): Buffer | undefined {
  let end = value.length;
  while (end > 0 && value.charCodeAt(end - 1) === 32) end--; // trailing space after a "," split
  let start = 0;
  while (start < end && value.charCodeAt(start) === 32) start++;
  let pad = 0;
  while (end - pad > start && value.charCodeAt(end - 1 - pad) === 61 /* = */) pad++;
  const body = end - pad - start;
  if (pad > 2) return undefined;
  if (pad > 0 && (body + pad) % 4 !== 0) return undefined;
  if (body % 4 === 1) return undefined;
  for (let i = start; i < start + body; i++) if (!isB64(value.charCodeAt(i))) return undefined;
  return Buffer.from(value.slice(start, end), "base64");
}

/**
 * Request headers, response headers or trailers → metadata. Repeated text values arrive joined with
 * ", " (as HTTP does); a repeated -bin key keeps its first value. Throws GrpcError INTERNAL for a -bin
 * value that is not base64 (as grpc-go does: the call fails rather than pass on garbage).
 */
export function fromHeaders(headers: IncomingHttpHeaders): Metadata {
  const out: Metadata = {};
  for (const key in headers) {
    if (isReserved(key)) continue;
    const raw = headers[key];
    if (raw === undefined) continue;
    if (isBinKey(key)) {
      const values = (Array.isArray(raw) ? raw : raw.split(",")) as string[];
      let first: Buffer | undefined;
      for (const v of values) {
        const bytes = decodeBase64Strict(v);
        if (!bytes) throw new GrpcError(Status.INTERNAL, `malformed binary metadata ${key}: not base64`);
        first ??= bytes;
      }
      out[key] = new Uint8Array(first!.buffer, first!.byteOffset, first!.byteLength);
    } else {
      out[key] = Array.isArray(raw) ? raw.join(", ") : raw;
    }
  }
  return out;
}

const KEY_RE = /^[0-9a-z_.-]+$/;
/** Printable ASCII only (what a text metadata value may hold): a loop, not a RegExp#test per value per call. */
function isPrintableAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}
// Keys seen valid before: most calls carry the same few keys, so the regex runs once per key, not per call.
const goodKeys = new Set<string>();

/**
 * Adds `md` to outgoing headers/trailers `out` and returns it. Reserved keys are skipped; a key or value
 * HTTP/2 or gRPC would refuse (upper case, spaces, control characters) is dropped rather than failing
 * the whole call. A string under a -bin key is sent as its UTF-8 bytes; bytes under a text key are dropped.
 */
export function toHeaders(md: Metadata | undefined, out: OutgoingHttpHeaders): OutgoingHttpHeaders {
  if (!md) return out;
  for (const key in md) {
    if (isReserved(key)) continue;
    if (!goodKeys.has(key)) {
      if (!KEY_RE.test(key)) continue;
      if (goodKeys.size < 1024) goodKeys.add(key);
    }
    const v = md[key]!;
    if (isBinKey(key)) {
      const b = typeof v === "string" ? Buffer.from(v, "utf8") : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
      out[key] = b.toString("base64");
    } else if (typeof v === "string" && isPrintableAscii(v)) {
      out[key] = v;
    }
  }
  return out;
}
