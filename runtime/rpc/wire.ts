// Encoders/decoders for the control messages in proto/mesh/v1/rpc.proto (call heads, statuses,
// headers, HELLO). Payloads never pass through here. Decoding input from a peer can fail: callers get
// a WireError naming the message and turn it into a status or a closed session, never a crash.
// All are hand-coded (call-head-codec.ts, hello-codec.ts), so importing this loads no protobufjs (~6 MB
// of a sidecar's RSS); protobufjs is only the reference the codecs' tests check against.
import {
  decodeCallHeadFast,
  decodeEndStatusFast,
  decodeHeadersFast,
  encodeCallHeadTransient,
  encodeEndStatusFast,
  encodeEndStatusTransient as encodeEndStatusFastTransient,
  encodeHeadersFast,
  encodeHeadersTransient,
} from "./call-head-codec.ts";
import { decodeHelloFields, encodeHelloFields, HelloError } from "./hello-codec.ts";
import { hasMetadata, type Metadata } from "./status.ts";

export class WireError extends Error {
  override name = "WireError";
}

export interface CallHead {
  method: string;
  metadata: Metadata;
  timeoutUs: number;
  serverStreaming: boolean;
  clientStreaming: boolean;
}

export interface EndStatusMsg {
  code: number;
  message: string;
  trailers: Metadata;
}

export interface ShmSetupMsg {
  segmentPath: string;
  ringBytes: number;
  segmentBytes: number;
  spinUs: number;
  nonce: Uint8Array;
}

export interface HelloMsg {
  version: number;
  role: "app" | "sidecar";
  transports: string[];
  maxMessageBytes: number;
  initialWindowBytes: number;
  maxConcurrentCalls: number;
  shmOffer?: { ringBytes: number };
  shmSetup?: ShmSetupMsg;
  rpal?: { serviceKey: bigint; serviceId: number };
  error?: string;
  appName?: string;
  forced?: boolean;
}

export { encodeCallHeadTransient };

/** Encodes a call head into a fresh buffer (the channel uses the transient encoder directly). */
export function encodeCallHead(h: CallHead): Uint8Array {
  return encodeCallHeadTransient(h).slice();
}

/** Decodes the call head in bytes[0, end) (a CALL that carries its message holds more after it). */
export function decodeCallHead(bytes: Uint8Array, end: number = bytes.byteLength): CallHead {
  try {
    return decodeCallHeadFast(bytes, end);
  } catch (e) {
    throw new WireError(`${(e as Error).message} (${end} bytes)`);
  }
}

export function encodeEndStatus(code: number, message: string, trailers?: Metadata): Uint8Array {
  if (code === 0 && !message && !hasMetadata(trailers)) return EMPTY;
  return encodeEndStatusFast(code, message, trailers);
}

/** encodeEndStatus into a shared scratch buffer: valid only until the next encode (for Transport.send, which copies). */
export function encodeEndStatusTransient(code: number, message: string, trailers?: Metadata): Uint8Array {
  if (code === 0 && !message && !hasMetadata(trailers)) return EMPTY;
  return encodeEndStatusFastTransient(code, message, trailers);
}

export function decodeEndStatus(bytes: Uint8Array): EndStatusMsg {
  // The common case (OK, no message, no trailers) is an empty body.
  if (bytes.byteLength === 0) return { code: 0, message: "", trailers: {} };
  try {
    return decodeEndStatusFast(bytes);
  } catch (e) {
    throw new WireError(`${(e as Error).message} (${bytes.byteLength} bytes)`);
  }
}

export function encodeHeaders(md: Metadata): Uint8Array {
  return encodeHeadersFast(md);
}

export { encodeHeadersTransient };

export function decodeHeaders(bytes: Uint8Array): Metadata {
  try {
    return decodeHeadersFast(bytes);
  } catch (e) {
    throw new WireError(`${(e as Error).message} (${bytes.byteLength} bytes)`);
  }
}

export function encodeHello(h: HelloMsg): Uint8Array {
  return encodeHelloFields(h);
}

export function decodeHello(bytes: Uint8Array): HelloMsg {
  try {
    return decodeHelloFields(bytes);
  } catch (e) {
    if (e instanceof HelloError) throw new WireError(e.message);
    throw new WireError(`malformed HELLO (${bytes.byteLength} bytes): ${(e as Error).message}`);
  }
}

const EMPTY = new Uint8Array(0);
