// Status on the wire (PROTOCOL-HTTP2.md): grpc-status as a decimal in the trailers (or in the headers of
// a trailers-only response) and grpc-message percent-encoded: bytes outside printable ASCII, and "%"
// itself, as %XX of their UTF-8 bytes. Also what a client makes of an HTTP status or RST_STREAM code
// when no grpc-status came (the mapping grpc-js and the spec's http-grpc-status-mapping.md use).
import { Status } from "../../../runtime/rpc/status.ts";

/** True when `s` needs no escaping: every char in 0x20-0x7E except "%". */
function plain(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) return false;
  }
  return true;
}

const HEX = "0123456789ABCDEF";

export function encodeGrpcMessage(details: string): string {
  if (plain(details)) return details;
  let out = "";
  for (const b of Buffer.from(details, "utf8")) {
    if (b >= 0x20 && b <= 0x7e && b !== 0x25) out += String.fromCharCode(b);
    else out += "%" + HEX[b >> 4] + HEX[b & 15];
  }
  return out;
}

function hexVal(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Decodes %XX sequences as UTF-8 bytes; a "%" not followed by two hex digits is kept as it is. */
export function decodeGrpcMessage(value: string): string {
  if (!value.includes("%")) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x25 && i + 2 < value.length) {
      const h = hexVal(value.charCodeAt(i + 1));
      const l = hexVal(value.charCodeAt(i + 2));
      if (h >= 0 && l >= 0) {
        bytes.push(h * 16 + l);
        i += 2;
        continue;
      }
    }
    // Header values arrive as Latin-1 (one char per byte); anything wider is taken as UTF-8 text.
    if (c < 0x100) bytes.push(c);
    else for (const b of Buffer.from(String.fromCodePoint(value.codePointAt(i)!), "utf8")) bytes.push(b);
    if (c >= 0xd800 && c <= 0xdbff) i++;
  }
  return Buffer.from(bytes).toString("utf8");
}

/** grpc-status header value → code; undefined when absent or not a decimal number. */
export function parseGrpcStatus(value: string | string[] | undefined): number | undefined {
  if (typeof value !== "string" || value.length === 0 || value.length > 3) return undefined;
  let v = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return undefined;
    v = v * 10 + c;
  }
  return v;
}

/** A response whose HTTP status is not 200 and that carries no grpc-status. */
export function statusFromHttp(httpStatus: number): { code: number; details: string } {
  let code: number;
  switch (httpStatus) {
    case 400:
      code = Status.INTERNAL;
      break;
    case 401:
      code = Status.UNAUTHENTICATED;
      break;
    case 403:
      code = Status.PERMISSION_DENIED;
      break;
    case 404:
      code = Status.UNIMPLEMENTED;
      break;
    case 429:
    case 502:
    case 503:
    case 504:
      code = Status.UNAVAILABLE;
      break;
    default:
      code = Status.UNKNOWN;
  }
  return { code, details: `received HTTP status ${httpStatus} without a gRPC status` };
}

// RST_STREAM codes (RFC 9113 §7), as numbers: node:http2 is not loaded for them.
const C = { NGHTTP2_REFUSED_STREAM: 7, NGHTTP2_CANCEL: 8, NGHTTP2_ENHANCE_YOUR_CALM: 11, NGHTTP2_INADEQUATE_SECURITY: 12 } as const;

/** A stream reset by the server (RST_STREAM) before a status came. */
export function statusFromRst(rstCode: number): { code: number; details: string } {
  switch (rstCode) {
    case C.NGHTTP2_REFUSED_STREAM:
      return { code: Status.UNAVAILABLE, details: "stream refused by the server (RST_STREAM REFUSED_STREAM)" };
    case C.NGHTTP2_CANCEL:
      return { code: Status.CANCELLED, details: "stream cancelled by the server (RST_STREAM CANCEL)" };
    case C.NGHTTP2_ENHANCE_YOUR_CALM:
      return { code: Status.RESOURCE_EXHAUSTED, details: "bandwidth exhausted or memory limit exceeded (RST_STREAM ENHANCE_YOUR_CALM)" };
    case C.NGHTTP2_INADEQUATE_SECURITY:
      return { code: Status.PERMISSION_DENIED, details: "protocol not secure enough (RST_STREAM INADEQUATE_SECURITY)" };
    default:
      return { code: Status.INTERNAL, details: `received RST_STREAM with code ${rstCode} before a gRPC status` };
  }
}
