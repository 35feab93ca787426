// Encoders/decoders for the control messages in proto/mesh/v1/rpc.proto (call heads, statuses,
// headers, HELLO). Payloads never pass through here. Decoding input from a peer can fail: callers get
// a WireError naming the message and turn it into a status or a closed session, never a crash.
import protobuf from "protobufjs";
import { join } from "node:path";
import { decodeCallHeadFast, decodeEndStatusFast, decodeHeadersFast, encodeCallHeadTransient, encodeEndStatusFast, encodeHeadersFast } from "./call-head-codec.ts";
import { hasMetadata, type Metadata } from "./status.ts";

const root = protobuf.loadSync(join(import.meta.dir, "../../proto/mesh/v1/rpc.proto"));
const HelloType = root.lookupType("mesh.v1.Hello");

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

function decode<T>(type: protobuf.Type, bytes: Uint8Array, what: string): T {
  try {
    return type.decode(bytes) as unknown as T;
  } catch (e) {
    throw new WireError(`malformed ${what} (${bytes.byteLength} bytes): ${(e as Error).message}`);
  }
}

export { encodeCallHeadTransient };

function num(v: unknown): number {
  if (typeof v === "number") return v;
  if (v && typeof v === "object" && "toNumber" in v) return (v as { toNumber(): number }).toNumber();
  return Number(v ?? 0);
}

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

export function decodeHeaders(bytes: Uint8Array): Metadata {
  try {
    return decodeHeadersFast(bytes);
  } catch (e) {
    throw new WireError(`${(e as Error).message} (${bytes.byteLength} bytes)`);
  }
}

export function encodeHello(h: HelloMsg): Uint8Array {
  return HelloType.encode({
    ...h,
    rpal: h.rpal ? { serviceKey: h.rpal.serviceKey.toString(), serviceId: h.rpal.serviceId } : undefined,
  }).finish();
}

export function decodeHello(bytes: Uint8Array): HelloMsg {
  const m = decode<Record<string, any>>(HelloType, bytes, "HELLO");
  const role = m.role === "sidecar" ? "sidecar" : m.role === "app" ? "app" : undefined;
  if (!role) throw new WireError(`HELLO with unknown role ${JSON.stringify(m.role)}`);
  const hello: HelloMsg = {
    version: m.version ?? 0,
    role,
    transports: m.transports ?? [],
    maxMessageBytes: m.maxMessageBytes ?? 0,
    initialWindowBytes: m.initialWindowBytes ?? 0,
    maxConcurrentCalls: m.maxConcurrentCalls ?? 0,
  };
  if (m.shmOffer) hello.shmOffer = { ringBytes: m.shmOffer.ringBytes ?? 0 };
  if (m.shmSetup) {
    hello.shmSetup = {
      segmentPath: m.shmSetup.segmentPath ?? "",
      ringBytes: m.shmSetup.ringBytes ?? 0,
      segmentBytes: num(m.shmSetup.segmentBytes),
      spinUs: m.shmSetup.spinUs ?? 0,
      nonce: m.shmSetup.nonce ?? new Uint8Array(0),
    };
  }
  if (m.rpal) {
    const key = String(m.rpal.serviceKey ?? "");
    if (!/^\d{1,20}$/.test(key)) throw new WireError(`HELLO carries a malformed RPAL service key ${JSON.stringify(key.slice(0, 40))}`);
    hello.rpal = { serviceKey: BigInt(key), serviceId: m.rpal.serviceId ?? 0 };
  }
  if (m.error) hello.error = m.error;
  if (m.appName) hello.appName = m.appName;
  if (m.forced) hello.forced = true;
  return hello;
}

const EMPTY = new Uint8Array(0);
