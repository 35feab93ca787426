// A hand-written codec for mesh.v1.Hello, the first frame of every app↔sidecar session. It keeps
// protobufjs (~6 MB of a sidecar's RSS, for one message per session) off the main thread. The bytes
// are what protobufjs 8 writes for proto/mesh/v1/rpc.proto (proto3: fields in number order, zero
// values left out), and decoding follows its rules (a known field with another wire type is skipped as
// unknown, a repeated sub-message merges into the earlier one), firmer on a peer's input: strings must
// be UTF-8, at most MAX_TRANSPORTS transports and MAX_FIELD_BYTES per string or nonce, no groups, and
// segment_bytes below 2^53. hello-codec.test.ts checks both directions against protobufjs.
//
//   Hello     1 version u32 · 2 role string · 3 transports repeated string · 4 max_message_bytes u32
//             5 initial_window_bytes u32 · 6 max_concurrent_calls u32 · 7 shm_offer ShmOffer
//             8 shm_setup ShmSetup · 9 rpal RpalOffer · 10 error string · 11 app_name string · 12 forced bool
//   ShmOffer  1 ring_bytes u32
//   ShmSetup  1 segment_path string · 2 ring_bytes u32 · 3 segment_bytes u64 · 4 spin_us u32 · 5 nonce bytes
//   RpalOffer 1 service_key string (a decimal u64) · 2 service_id int32
import type { HelloMsg, ShmSetupMsg } from "./wire.ts";

export class HelloError extends Error {
  override name = "WireError";
}

/** Limits on a peer's HELLO: more transports, or a longer string or nonce, is an error. */
export const MAX_TRANSPORTS = 16;
export const MAX_FIELD_BYTES = 4096;
const U64_MAX = (1n << 64n) - 1n;

// ---- encoding ------------------------------------------------------------------------------

const encoder = new TextEncoder();
type Out = number[];

/** A varint of the 64-bit value hi·2^32 + lo (both uint32), as protobufjs writes it. */
function varint(o: Out, lo: number, hi = 0): void {
  while (hi !== 0 || lo > 0x7f) {
    o.push((lo & 0x7f) | 0x80);
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  o.push(lo);
}

function len(o: Out, field: number, b: ArrayLike<number>): void {
  o.push(field * 8 + 2); // every field number here is < 16: a one-byte tag
  varint(o, b.length);
  for (let i = 0; i < b.length; i++) o.push(b[i]!);
}

function u32(o: Out, field: number, v: number | undefined): void {
  if (v == null || v === 0) return;
  o.push(field * 8);
  varint(o, v >>> 0);
}

function str(o: Out, field: number, s: string | undefined): void {
  if (s != null && s !== "") len(o, field, encoder.encode(s));
}

/** uint64 from a number, as protobufjs's LongBits.fromNumber splits it (negatives in two's complement). */
function u64(o: Out, field: number, v: number | undefined): void {
  if (v == null || v === 0) return;
  const neg = v < 0;
  if (neg) v = -v;
  let lo = v >>> 0;
  let hi = ((v - lo) / 4294967296) >>> 0;
  if (neg) {
    hi = ~hi >>> 0;
    lo = ~lo >>> 0;
    if (++lo > 0xffffffff) {
      lo = 0;
      if (++hi > 0xffffffff) hi = 0;
    }
  }
  o.push(field * 8);
  varint(o, lo, hi);
}

function sub(o: Out, field: number, write: (inner: Out) => void): void {
  const inner: Out = [];
  write(inner);
  len(o, field, inner);
}

export function encodeHelloFields(h: HelloMsg): Uint8Array {
  const o: Out = [];
  u32(o, 1, h.version);
  str(o, 2, h.role);
  for (const t of h.transports ?? []) len(o, 3, encoder.encode(t));
  u32(o, 4, h.maxMessageBytes);
  u32(o, 5, h.initialWindowBytes);
  u32(o, 6, h.maxConcurrentCalls);
  const { shmOffer, shmSetup, rpal } = h;
  if (shmOffer != null) sub(o, 7, (s) => u32(s, 1, shmOffer.ringBytes));
  if (shmSetup != null) {
    sub(o, 8, (s) => {
      str(s, 1, shmSetup.segmentPath);
      u32(s, 2, shmSetup.ringBytes);
      u64(s, 3, shmSetup.segmentBytes);
      u32(s, 4, shmSetup.spinUs);
      if (shmSetup.nonce?.length) len(s, 5, shmSetup.nonce);
    });
  }
  if (rpal != null) {
    sub(o, 9, (s) => {
      str(s, 1, rpal.serviceKey.toString());
      if (rpal.serviceId != null && rpal.serviceId !== 0) {
        const id = rpal.serviceId | 0;
        s.push(2 * 8);
        varint(s, id >>> 0, id < 0 ? 0xffffffff : 0); // int32: a negative one sign-extends to 10 bytes
      }
    });
  }
  str(o, 10, h.error);
  str(o, 11, h.appName);
  if (h.forced != null && h.forced !== false) o.push(12 * 8, h.forced ? 1 : 0);
  return Uint8Array.from(o);
}

// ---- decoding (a peer's input: every length is checked against the end) ----------------------

const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

interface Cursor {
  buf: Uint8Array;
  at: number;
  end: number;
}

/** Bits 32..63 of the varint readVarint last read; `nonzero`: whether any of its bits was set. */
let hi = 0;
let nonzero = false;

function fail(what: string): never {
  throw new HelloError(what);
}

/** Reads a varint of at most 10 bytes and returns its low 32 bits (bits 32..63 go to `hi`). */
function readVarint(c: Cursor): number {
  let lo = 0;
  let h = 0;
  let any = 0;
  for (let i = 0; i < 10; i++) {
    if (c.at >= c.end) fail("truncated varint");
    const b = c.buf[c.at++]!;
    const bits = b & 0x7f;
    any |= bits;
    if (i < 4) lo |= bits << (7 * i);
    else if (i === 4) {
      lo |= bits << 28;
      h = bits >>> 4;
    } else h |= bits << (7 * i - 32);
    if (b < 0x80) {
      hi = h >>> 0;
      nonzero = any !== 0;
      return lo >>> 0;
    }
  }
  fail("varint longer than 10 bytes");
}

/** The bytes of a length-delimited field, at most `max` of them (a view into the input). */
function readBytes(c: Cursor, what: string, max = MAX_FIELD_BYTES): Uint8Array {
  const n = readVarint(c);
  const left = c.end - c.at;
  if (hi !== 0 || n > left) fail(`${what} claims ${hi * 4294967296 + n} bytes, ${left} remain`);
  if (n > max) fail(`${what} is ${n} bytes, more than ${max}`);
  return c.buf.subarray(c.at, (c.at += n));
}

function readString(c: Cursor, what: string): string {
  const b = readBytes(c, what);
  try {
    return strict.decode(b);
  } catch {
    fail(`${what} is not valid UTF-8`);
  }
}

/** A length-delimited sub-message: a cursor over its bytes (the outer one moves past them). */
function readSub(c: Cursor, what: string): Cursor {
  const n = readBytes(c, what, Infinity).byteLength;
  return { buf: c.buf, at: c.at - n, end: c.at };
}

function skip(c: Cursor, tag: number): void {
  const field = tag >>> 3;
  const wt = tag & 7;
  if (field === 0) fail("field number 0");
  if (wt === 0) readVarint(c);
  else if (wt === 2) readBytes(c, `field ${field}`, Infinity);
  else if (wt === 1 || wt === 5) {
    const n = wt === 1 ? 8 : 4;
    if (c.end - c.at < n) fail(`truncated ${n * 8}-bit field ${field}`);
    c.at += n;
  } else fail(`field ${field} has wire type ${wt}${wt === 3 || wt === 4 ? " (a group)" : ""}`);
}

function readShmSetup(c: Cursor, s: ShmSetupMsg): void {
  while (c.at < c.end) {
    const tag = readVarint(c);
    if (tag === 0x0a) s.segmentPath = readString(c, "shm_setup.segment_path");
    else if (tag === 0x10) s.ringBytes = readVarint(c);
    else if (tag === 0x18) {
      const lo = readVarint(c);
      if (hi > 0x1fffff) fail(`shm_setup.segment_bytes ${(BigInt(hi) << 32n) | BigInt(lo)} is not below 2^53`);
      s.segmentBytes = hi * 4294967296 + lo;
    } else if (tag === 0x20) s.spinUs = readVarint(c);
    else if (tag === 0x2a) s.nonce = readBytes(c, "shm_setup.nonce").slice();
    else skip(c, tag);
  }
}

/** HELLO as read off the wire, before the checks that turn it into a HelloMsg. */
type Fields = Omit<HelloMsg, "role" | "rpal" | "error" | "appName" | "forced"> & {
  role: string;
  rpal?: { key: string; id: number };
  error: string;
  appName: string;
  forced: boolean;
};

function readHello(c: Cursor): Fields {
  const m: Fields = { version: 0, role: "", transports: [], maxMessageBytes: 0, initialWindowBytes: 0, maxConcurrentCalls: 0, error: "", appName: "", forced: false };
  while (c.at < c.end) {
    const tag = readVarint(c);
    switch (tag) {
      case 0x08: m.version = readVarint(c); break;
      case 0x12: m.role = readString(c, "role"); break;
      case 0x1a:
        if (m.transports.length === MAX_TRANSPORTS) fail(`more than ${MAX_TRANSPORTS} transports`);
        m.transports.push(readString(c, "transports"));
        break;
      case 0x20: m.maxMessageBytes = readVarint(c); break;
      case 0x28: m.initialWindowBytes = readVarint(c); break;
      case 0x30: m.maxConcurrentCalls = readVarint(c); break;
      case 0x3a: {
        const s = readSub(c, "shm_offer");
        m.shmOffer ??= { ringBytes: 0 };
        while (s.at < s.end) {
          const t = readVarint(s);
          if (t === 0x08) m.shmOffer.ringBytes = readVarint(s);
          else skip(s, t);
        }
        break;
      }
      case 0x42:
        readShmSetup(readSub(c, "shm_setup"), (m.shmSetup ??= { segmentPath: "", ringBytes: 0, segmentBytes: 0, spinUs: 0, nonce: new Uint8Array(0) }));
        break;
      case 0x4a: {
        const s = readSub(c, "rpal");
        m.rpal ??= { key: "", id: 0 };
        while (s.at < s.end) {
          const t = readVarint(s);
          if (t === 0x0a) m.rpal.key = readString(s, "rpal.service_key");
          else if (t === 0x10) m.rpal.id = readVarint(s) | 0;
          else skip(s, t);
        }
        break;
      }
      case 0x52: m.error = readString(c, "error"); break;
      case 0x5a: m.appName = readString(c, "app_name"); break;
      case 0x60:
        readVarint(c);
        m.forced = nonzero;
        break;
      default: skip(c, tag);
    }
  }
  return m;
}

/** Decodes a peer's HELLO; throws a HelloError naming HELLO and what is wrong. */
export function decodeHelloFields(bytes: Uint8Array): HelloMsg {
  let m: Fields;
  try {
    m = readHello({ buf: bytes, at: 0, end: bytes.byteLength });
  } catch (e) {
    if (e instanceof HelloError) throw new HelloError(`malformed HELLO (${bytes.byteLength} bytes): ${e.message}`);
    throw e;
  }
  const role = m.role === "sidecar" ? "sidecar" : m.role === "app" ? "app" : undefined;
  if (!role) throw new HelloError(`HELLO with unknown role ${JSON.stringify(m.role.slice(0, 40))}`);
  const hello: HelloMsg = {
    version: m.version,
    role,
    transports: m.transports,
    maxMessageBytes: m.maxMessageBytes,
    initialWindowBytes: m.initialWindowBytes,
    maxConcurrentCalls: m.maxConcurrentCalls,
  };
  if (m.shmOffer) hello.shmOffer = m.shmOffer;
  if (m.shmSetup) hello.shmSetup = m.shmSetup;
  if (m.rpal) {
    const key = m.rpal.key;
    if (!/^\d{1,20}$/.test(key) || BigInt(key) > U64_MAX) throw new HelloError(`HELLO carries a malformed RPAL service key ${JSON.stringify(key.slice(0, 40))}`);
    hello.rpal = { serviceKey: BigInt(key), serviceId: m.rpal.id };
  }
  if (m.error) hello.error = m.error;
  if (m.appName) hello.appName = m.appName;
  if (m.forced) hello.forced = true;
  return hello;
}
